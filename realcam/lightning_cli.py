"""``realcam fit|validate|test|predict``: LightningCLI over class_path/init_args YAML configs.

Models and data are chosen by ``class_path`` (subclass mode), so the teacher, the critic and the
generator are whatever the config names; registry names work wherever a component takes a string.
Resuming (``--ckpt_path``) loads checkpoints with ``weights_only=True`` by default.
"""
from __future__ import annotations

import lightning as L
from lightning.pytorch.cli import LightningCLI

SUBCOMMANDS = ("fit", "validate", "test", "predict")


class RealcamCLI(LightningCLI):
    def add_arguments_to_parser(self, parser) -> None:
        # Unknown keys are errors (jsonargparse); here we only set safer defaults.
        parser.set_defaults({"trainer.enable_model_summary": True})

    def _prepare_subcommand_parser(self, klass, subcommand, **kwargs):
        parser = super()._prepare_subcommand_parser(klass, subcommand, **kwargs)
        if "weights_only" in {a.dest for a in parser._actions}:
            parser.set_defaults(weights_only=True)
        return parser


def main(argv: list[str]) -> int:
    import realcam.data.datamodule  # noqa: F401  (importable default for data.class_path)
    import realcam.systems  # noqa: F401

    RealcamCLI(
        L.LightningModule,
        L.LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        args=argv,
        save_config_kwargs={"overwrite": True},
        auto_configure_optimizers=False,
    )
    return 0
