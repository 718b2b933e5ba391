"""A training run's configuration, read back from its Lightning checkpoint.

``realcam fit`` checkpoints carry the system's whole config (``hyper_parameters``: the ``class_path`` of the
system and every ``init_args`` value, the networks' and the codec's own ``class_path``/``init_args`` included;
see :func:`realcam.systems.common.save_config`), the data module's (``datamodule_hyper_parameters``) and the
command-line keys the run overrode (``realcam_run``, written by the CLI). :func:`run_config` turns that into the
YAML shape ``{"model": {"class_path", "init_args"}, "data": {...}}``.

A training YAML is then needed only for what a checkpoint lacks (a system built in Python with network
instances does not record them). :func:`merged_run_config` fills those gaps from the YAML and refuses a YAML
value that contradicts the checkpoint, naming the key, unless the run overrode that key on its command line
(``--model.init_args.shift 5.0`` over the stock YAML's 3.0: the checkpoint's 5.0 is the run's value).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import yaml

RUN_RECORD = "realcam_run"      # checkpoint key: {"argv": [...], "overrides": ["model.init_args.shift", ...]}


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """A Lightning checkpoint (weights only, on the CPU), or a ValueError naming --ckpt and what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--ckpt {path} does not exist: give a .ckpt written by `realcam fit`")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:    # truncated files, pickles weights_only refuses
        raise ValueError(f"--ckpt {path} cannot be read ({type(err).__name__}): the file is truncated, corrupt or "
                         f"not a Lightning checkpoint") from None
    if not isinstance(ckpt, dict):
        raise ValueError(f"--ckpt {path} holds a {type(ckpt).__name__}, not a Lightning checkpoint")
    return ckpt


def _section(hparams: dict | None) -> dict[str, Any] | None:
    if not hparams:
        return None
    init = {k: v for k, v in hparams.items() if not k.startswith("_")}
    return {"class_path": hparams.get("_class_path"), "init_args": init}


def run_config(ckpt: str | Path, state: dict[str, Any] | None = None) -> dict[str, Any]:
    """``{"model", "data", "global_step", "overrides"}`` of a checkpoint (model/data None when not saved);
    ``state``: the checkpoint already loaded, so a caller that needs its weights too reads it once."""
    state = load_checkpoint(ckpt) if state is None else state
    record = state.get(RUN_RECORD) or {}
    return {"model": _section(state.get("hyper_parameters")), "data": _section(state.get("datamodule_hyper_parameters")),
            "global_step": int(state.get("global_step", 0)), "overrides": list(record.get("overrides", []))}


def _leaves(node: Any, prefix: str) -> dict[str, Any]:
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for key, value in node.items():
            out.update(_leaves(value, f"{prefix}.{key}"))
        return out
    return {prefix: list(node) if isinstance(node, tuple) else node}


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return float(a) == float(b)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def _overridden(key: str, overrides: list[str]) -> bool:
    return any(key == o or key.startswith(o + ".") for o in overrides)


def merged_run_config(ckpt: str | Path, config: str | Path | None = None,
                      state: dict[str, Any] | None = None) -> dict[str, Any]:
    """The run's config: the checkpoint's, with what it lacks taken from the training YAML ``config``.

    Raises ValueError naming the key when the YAML holds a value the checkpoint contradicts (and the run did not
    override on its command line), and when neither says what the export needs (the network).
    """
    run = run_config(ckpt, state)
    if config is None:
        return run
    path = Path(config)
    if not path.is_file():
        raise FileNotFoundError(f"--config {path} does not exist: give the run's training YAML, or leave --config "
                                f"out (the checkpoint describes the run)")
    cfg = yaml.safe_load(path.read_text()) or {}
    for part in ("model", "data"):
        theirs, ours = cfg.get(part), run[part]
        if not isinstance(theirs, dict):
            continue
        if ours is None:
            run[part] = theirs
            continue
        mine = _leaves(ours.get("init_args") or {}, f"{part}.init_args")
        for key, value in _leaves(theirs.get("init_args") or {}, f"{part}.init_args").items():
            if key in mine and not _same(value, mine[key]) and not _overridden(key, run["overrides"]):
                raise ValueError(f"--config {path}: {key} is {value!r} but the checkpoint {ckpt} was trained with "
                                 f"{mine[key]!r}; the checkpoint describes the run, so leave --config out (or fix "
                                 f"the YAML)")
            if key not in mine:     # a gap of the checkpoint (an older run, a network given as an instance)
                _set(ours, key.split(".")[1:], value)
        if ours.get("class_path") is None:
            ours["class_path"] = theirs.get("class_path")
    return run


def _set(tree: dict, keys: list[str], value: Any) -> None:
    for key in keys[:-1]:
        tree = tree.setdefault(key, {})
        if not isinstance(tree, dict):
            return          # the checkpoint holds a non-mapping there (a registry name): it wins
    tree[keys[-1]] = value
