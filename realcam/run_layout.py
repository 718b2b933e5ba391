"""Where ``realcam fit|validate|test|predict`` put things, and how their config mistakes read (the CLI layer).

A run is a folder named by ``trainer.default_root_dir`` (``runs/NAME``), never by a ``version_N``:

    runs/NAME/config.yaml           the resolved config of the last `realcam fit` into it
    runs/NAME/checkpoints/          last.ckpt and the step checkpoints
    runs/NAME/events.out.tfevents.* TensorBoard: scalars, hyperparameters, validation videos
    runs/NAME/csv/version_N/        CSV metrics of each fit segment (a resume starts a new segment)
    runs/NAME/videos/               validation side-by-side mp4s
    runs/NAME/<stage>/<eval_name>/  realcam validate|test|predict of a checkpoint of this run (reports,
                                    videos, predictions), eval_name defaulting to the checkpoint's stem

``realcam fit`` refuses a run folder that already holds checkpoints unless ``--ckpt_path`` resumes it, so a second
run can never mix its checkpoints with the first's.
"""
from __future__ import annotations

import traceback
from pathlib import Path
from typing import Any

from realcam.registry import ATTENTION_BACKENDS, BACKBONES, CAMERA_ENCODERS, CODECS, UnknownNameError

EVAL_STAGES = ("validate", "test", "predict")

# init_args that take a registry name (as a string) in realcam's classes, and the registry that resolves it
REGISTRY_FIELDS = {"camera_encoder": CAMERA_ENCODERS, "attention": ATTENTION_BACKENDS, "codec": CODECS,
                   "generator": BACKBONES, "real_score": BACKBONES, "critic": BACKBONES}


class ConfigError(Exception):
    """A config or command-line mistake, told in one line (the command prints it and exits 2, no traceback)."""


def _as_dict(config: Any) -> Any:
    return config.as_dict() if hasattr(config, "as_dict") else config


def check_registry_names(config: Any) -> None:
    """Every registry name in a parsed config exists, else :class:`ConfigError` naming the key and the close
    matches: ``model.init_args.denoiser.init_args.camera_encoder: unknown camera encoder 'pluker'; did you mean
    'plucker'? ...``. Only ``init_args`` of a ``class_path`` are read, so other keys of the same name are left be."""
    def walk(node: Any, path: str) -> None:
        if isinstance(node, dict):
            init = node.get("init_args") if "class_path" in node else None
            for key, value in (init or {}).items():
                registry = REGISTRY_FIELDS.get(key)
                if registry is not None and isinstance(value, str):
                    try:
                        registry.get(value)
                    except UnknownNameError as err:
                        raise ConfigError(f"{path}init_args.{key}: {err}") from None
            for key, value in node.items():
                walk(value, f"{path}{key}.")
        elif isinstance(node, list):
            for i, value in enumerate(node):
                walk(value, f"{path[:-1]}[{i}].")

    config = _as_dict(config)
    sub = config.get("subcommand")
    walk(config.get(sub, config) if sub else config, "")


def config_error(err: BaseException) -> ConfigError:
    """The one line worth reading in a chain of wrapped errors: the innermost one raised by realcam's own code
    (a constructor's check), else the innermost of all."""
    chain, seen = [], set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        chain.append(err)
        err = err.__cause__ or err.__context__
    package = str(Path(__file__).resolve().parent)

    def raised_in_realcam(e: BaseException) -> bool:
        frames = traceback.extract_tb(e.__traceback__)
        return bool(frames) and str(Path(frames[-1].filename).resolve()).startswith(package)

    ours = [e for e in chain if raised_in_realcam(e)]
    root = (ours or chain)[-1]
    text = str(root).strip().splitlines()[0] if str(root).strip() else type(root).__name__
    return ConfigError(text)


def run_of_checkpoint(ckpt: str | Path, fallback: str | Path) -> Path:
    """The run folder holding ``ckpt`` (``RUN/checkpoints/x.ckpt`` -> ``RUN``), else ``fallback``."""
    parent = Path(ckpt).resolve().parent
    return parent.parent if parent.name == "checkpoints" else Path(fallback)


def place_run(config: Any) -> Path | None:
    """Point ``trainer.default_root_dir`` of the parsed ``config`` at the folder this command writes (see the
    module docstring) and check it; returns that folder."""
    sub = config.get("subcommand")
    if not sub:
        return None
    cfg = config[sub]
    root = Path(cfg["trainer.default_root_dir"] or "runs/default")
    ckpt = cfg.get("ckpt_path")
    if sub == "fit":
        held = sorted((root / "checkpoints").glob("*.ckpt")) if (root / "checkpoints").is_dir() else []
        if held and not ckpt:
            raise ConfigError(f"trainer.default_root_dir={str(root)!r} already holds a run ({held[-1].name} in "
                              f"{root / 'checkpoints'}): resume it with --ckpt_path {root / 'checkpoints' / 'last.ckpt'}"
                              f" or name a new run with --trainer.default_root_dir runs/NEW_NAME")
    elif sub in EVAL_STAGES:
        name = cfg.get("eval_name") or (Path(ckpt).stem if ckpt else "untrained")
        if "/" in name or name in ("", ".", ".."):
            raise ConfigError(f"--eval_name {name!r}: give a plain folder name (no '/')")
        root = run_of_checkpoint(ckpt, root) / sub / name if ckpt else root / sub / name
    cfg["trainer.default_root_dir"] = str(root)
    return root


def default_loggers(root: str | Path) -> list:
    """TensorBoard (first, so ``trainer.log_dir`` is the run folder itself) and CSV (a version per segment)."""
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    return [TensorBoardLogger(save_dir=str(root), name="", version=""),
            CSVLogger(save_dir=str(root), name="csv")]


def overridden_keys(argv: list[str]) -> list[str]:
    """The config keys a command line set explicitly: ``--model.init_args.shift 5.0`` -> ``model.init_args.shift``."""
    keys = []
    for arg in argv:
        if arg.startswith("--") and "." in arg.partition("=")[0]:
            keys.append(arg[2:].partition("=")[0].rstrip("+"))
    return sorted(set(keys))


def run_record_callback(argv: list[str]):
    """A callback that writes the command line (and every key any segment of the run overrode) into each
    checkpoint, so ``realcam export`` can tell a stock YAML from a contradicting one
    (:func:`realcam.run_config.merged_run_config`)."""
    from lightning.pytorch.callbacks import Callback

    from realcam.run_config import RUN_RECORD

    class RunRecord(Callback):
        def __init__(self) -> None:
            self.record = {"argv": list(argv), "overrides": overridden_keys(argv)}

        def on_load_checkpoint(self, trainer, pl_module, checkpoint) -> None:     # a resumed run keeps its past
            past = checkpoint.get(RUN_RECORD) or {}
            self.record["overrides"] = sorted(set(self.record["overrides"]) | set(past.get("overrides", [])))

        def on_save_checkpoint(self, trainer, pl_module, checkpoint) -> None:
            checkpoint[RUN_RECORD] = dict(self.record)

    return RunRecord()
