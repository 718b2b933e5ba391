"""``realcam fit|validate|test|predict``: LightningCLI over class_path/init_args YAML configs.

Models and data are chosen by ``class_path`` (subclass mode), so the teacher, the critic and the
generator are whatever the config names; registry names work wherever a component takes a string.
Resuming (``--ckpt_path``) loads checkpoints with ``weights_only=True`` by default. With ``--ckpt_path`` the
model's settings come from the checkpoint's hyper-parameters (as Lightning does), except the ``--model.*`` values
given explicitly on the command line, which win: ``realcam test --ckpt_path X --model.init_args.sample_steps 10``
samples with 10 steps.
"""
from __future__ import annotations

import warnings

import lightning as L
import yaml
from lightning.pytorch.cli import LightningCLI

SUBCOMMANDS = ("fit", "validate", "test", "predict")


class RealcamCLI(LightningCLI):
    def add_arguments_to_parser(self, parser) -> None:
        # Unknown keys are errors (jsonargparse); here we only set safer defaults.
        parser.set_defaults({"trainer.enable_model_summary": True})

    def __init__(self, *args, **kwargs):
        argv = kwargs.get("args")
        self._argv = [str(a) for a in argv] if isinstance(argv, (list, tuple)) else None
        super().__init__(*args, **kwargs)

    def _parse_ckpt_path(self) -> None:
        """Lightning overwrites the model's config with the checkpoint's hyper-parameters, so an explicit
        ``--model.init_args.guidance 2`` next to ``--ckpt_path`` would silently lose. Re-apply those overrides."""
        super()._parse_ckpt_path()
        sub = self.config.get("subcommand") if self._argv is not None else None
        if not sub or not self.config[sub].get("ckpt_path"):
            return
        for key, value in _model_overrides(self._argv).items():
            self.config[sub][f"model.{key}"] = value

    def _prepare_subcommand_parser(self, klass, subcommand, **kwargs):
        parser = super()._prepare_subcommand_parser(klass, subcommand, **kwargs)
        dests = {a.dest for a in parser._actions}
        if "weights_only" in dests:
            parser.set_defaults(weights_only=True)
        if subcommand == "predict" and "return_predictions" in dests:
            parser.set_defaults(return_predictions=False)     # PredictionWriter writes them; memory stays flat
        return parser

    def before_predict(self) -> None:
        """A run without a PredictionWriter would generate and throw the videos away: add the default one."""
        from realcam.systems.evaluation import PredictionWriter

        if not any(isinstance(cb, PredictionWriter) for cb in self.trainer.callbacks):
            self.trainer.callbacks.append(PredictionWriter())


def _model_overrides(argv: list[str]) -> dict:
    """The ``--model.a.b value`` / ``--model.a.b=value`` arguments as {"a.b": value} (values parsed as YAML)."""
    out: dict = {}
    for i, arg in enumerate(argv):
        if not arg.startswith("--model."):
            continue
        key, sep, value = arg[len("--model."):].partition("=")
        if not sep:                         # "--model.a.b value"
            if i + 1 == len(argv):
                continue
            value = argv[i + 1]
        out[key] = yaml.safe_load(value)
    return out


# Lightning warnings about things realcam does on purpose; the command hides them so real ones stand out.
EXPECTED_WARNINGS = (
    r"Found \d+ module\(s\) in eval mode",          # EMA shadows, frozen real scores and the metrics nets
    r"Your `IterableDataset` has `__len__` defined",  # ShardStream splits shards per (rank, worker) itself
)


def main(argv: list[str]) -> int:
    import realcam.data.datamodule  # noqa: F401  (importable default for data.class_path)
    import realcam.systems  # noqa: F401

    with warnings.catch_warnings():
        for message in EXPECTED_WARNINGS:
            warnings.filterwarnings("ignore", message=message)
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
