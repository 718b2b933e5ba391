"""``realcam fit|validate|test|predict``: LightningCLI over class_path/init_args YAML configs.

Models and data are chosen by ``class_path`` (subclass mode), so the teacher, the critic and the
generator are whatever the config names; registry names work wherever a component takes a string.
Resuming (``--ckpt_path``) loads checkpoints with ``weights_only=True`` by default. With ``--ckpt_path`` the
model's settings come from the checkpoint's hyper-parameters (as Lightning does), except the ``--model.*`` values
given explicitly on the command line, which win: ``realcam test --ckpt_path X --model.init_args.sample_steps 10``
samples with 10 steps.

Where a run writes (``runs/NAME``, no ``version_N``; evaluations under the run they evaluate) and how a config
mistake reads (one line, exit 2) is :mod:`realcam.run_layout`; docs/cli.md and docs/training.md describe both.
"""
from __future__ import annotations

import sys
import warnings
from pathlib import Path
from typing import Optional

import lightning as L
import yaml
from lightning.pytorch.cli import LightningCLI

from realcam.atomic import check_outputs
from realcam.run_layout import (ConfigError, check_registry_names, config_error, default_loggers, place_run,
                                run_record_callback)

SUBCOMMANDS = ("fit", "validate", "test", "predict")


class RealcamCLI(LightningCLI):
    def add_arguments_to_parser(self, parser) -> None:
        # Unknown keys are errors (jsonargparse); here we only set safer defaults.
        parser.set_defaults({"trainer.enable_model_summary": True})
        parser.add_argument("--eval_name", type=Optional[str], default=None,
                            help="validate/test/predict: outputs go to RUN/<stage>/<eval_name> (default: the "
                                 "checkpoint's file stem), RUN being the run that holds --ckpt_path")

    def parse_arguments(self, parser, args) -> None:
        """Parse ``args`` (a list: ``realcam`` routes its own argv, so LightningCLI's warning about ``args`` next to
        ``sys.argv`` does not apply) and check every registry name, ``--print_config`` included: it prints only a
        config whose names exist."""
        if not isinstance(args, (list, tuple)):
            return super().parse_arguments(parser, args)
        printing = [a for a in args if a == "--print_config" or a.startswith("--print_config=")]
        if printing:
            check_registry_names(parser.parse_args([a for a in args if a not in printing]))
        self.config = parser.parse_args(args)
        check_registry_names(self.config)

    def before_instantiate_classes(self) -> None:
        self.run_dir = place_run(self.config)

    def instantiate_trainer(self, **kwargs):
        """TensorBoard + CSV loggers in the run folder unless the config names its own (``trainer.logger``), and
        checkpoints in ``RUN/checkpoints`` unless a ModelCheckpoint names its ``dirpath``."""
        sub = self.config.get("subcommand")
        if sub and self.run_dir is not None and self.config[sub].get("trainer.logger") in (None, True):
            kwargs["logger"] = default_loggers(self.run_dir)
        trainer = super().instantiate_trainer(**kwargs)
        if sub == "fit":
            trainer.callbacks.append(run_record_callback(self._argv or []))
        for callback in trainer.checkpoint_callbacks if sub == "fit" else []:
            if self.run_dir is not None and getattr(callback, "dirpath", "") is None:
                callback.dirpath = str(Path(self.run_dir).resolve() / "checkpoints")
        return trainer

    def instantiate_classes(self) -> None:
        """Build model, data and trainer; a constructor's ValueError (a bad value) becomes one line, not the ~8 KB
        of jsonargparse's chained tracebacks."""
        try:
            super().instantiate_classes()
        except ConfigError:
            raise
        except (ValueError, TypeError, KeyError, FileNotFoundError, ImportError) as err:
            raise config_error(err) from None

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
        inputs = {"--ckpt_path": self.config[self.subcommand].get("ckpt_path")}
        urls = (getattr(self.datamodule, "urls", None) or {}).get("predict") or []
        inputs.update({f"predict shard {url}": url for url in urls if Path(url).exists()})
        for writer in (cb for cb in self.trainer.callbacks if isinstance(cb, PredictionWriter)):
            try:        # before any video is generated
                check_outputs({"PredictionWriter output_dir": writer.folder(self.trainer)}, inputs,
                              folders=("PredictionWriter output_dir",))
            except ValueError as err:
                raise ConfigError(str(err)) from None


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
        try:
            RealcamCLI(
                L.LightningModule,
                L.LightningDataModule,
                subclass_mode_model=True,
                subclass_mode_data=True,
                args=argv,
                save_config_kwargs={"overwrite": True},
                auto_configure_optimizers=False,
            )
        except ConfigError as err:
            print(f"realcam {argv[0] if argv else ''}: error: {err}", file=sys.stderr)
            return 2
    return 0
