"""The bundle format: a folder holding a trained network for inference (docs/streaming.md, Bundles).

``model.safetensors`` holds the bare weights (the EMA); ``config.yaml`` the network and codec
(``class_path``/``init_args``), schedule, pose reference, image size, fps, role and provenance; ``text.npy``
(optional, for a network that reads text) the prompt embedding a stream uses unless given another.
:func:`export_checkpoint` writes one from a training run (``realcam export``); :func:`load_bundle` reads it back.
Nothing here needs Lightning.
"""
from __future__ import annotations

import inspect
import shutil
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import yaml
from torch import Tensor, nn

from realcam import geometry
from realcam.modules.codecs import LatentCodec
from realcam.modules.flow import FlowSchedule
from realcam.networks import load_network_weights
from realcam.registry import BACKBONES, CODECS

ASSETS = Path(__file__).resolve().parent / "assets"
BUNDLE_WEIGHTS, BUNDLE_CONFIG, BUNDLE_TEXT = "model.safetensors", "config.yaml", "text.npy"
ROLES = ("student", "teacher")


@dataclass
class Bundle:
    """A loaded bundle: the network (eval mode, no grad), its codec, the parsed ``config.yaml`` and, for a
    network that reads text, the stored prompt embedding ``text`` [L, D] (``text.npy``) if there is one."""

    network: nn.Module
    codec: LatentCodec
    config: dict[str, Any]
    path: Path | None = None
    text: Tensor | None = None

    def options(self) -> dict[str, Any]:
        """The :class:`StreamingGenerator` arguments the config (and ``text.npy``) fix."""
        c = self.config
        text = {} if self.text is None else {"text": self.text}
        return dict(image_size=tuple(c["image_size"]), shift=float(c["shift"]),
                    denoising_steps=tuple(c["denoising_steps"]), pose_reference=c["pose_reference"],
                    fps=float(c["fps"]), **text)


def _instantiate(spec: Any, kind: type, field_name: str, registry) -> Any:
    """``{class_path, init_args}`` (checked by jsonargparse: a typo is an error) or a registry name."""
    if isinstance(spec, str):
        return registry.build(spec)
    if not isinstance(spec, dict) or "class_path" not in spec:
        raise ValueError(f"{field_name} = {spec!r}: expected a registry name or {{class_path, init_args}}")
    from jsonargparse import ArgumentParser

    parser = ArgumentParser(exit_on_error=False)
    parser.add_argument("--value", type=kind)
    try:
        return parser.instantiate(parser.parse_object({"value": spec})).value
    except Exception as err:     # jsonargparse wraps the reason in its own error types
        raise ValueError(f"{field_name} cannot be built from {spec.get('class_path')!r}: {err}") from None


def build_network(config: dict[str, Any]) -> nn.Module:
    """The bundle's network: ``network`` as class_path/init_args, or a backbone name plus ``network_args``."""
    spec = config.get("network")
    if isinstance(spec, str):
        return BACKBONES.build(spec, **(config.get("network_args") or {}))
    return _instantiate(spec, nn.Module, "network", BACKBONES)


def _check_config(config: dict[str, Any], where: str) -> dict[str, Any]:
    for key in ("network", "codec", "shift", "denoising_steps", "pose_reference", "image_size", "fps", "role"):
        if key not in config:
            raise ValueError(f"{where}: config.yaml has no {key!r} (bundle format: docs/streaming.md)")
    if config["pose_reference"] not in geometry.POSE_REFERENCES:
        raise ValueError(f"{where}: pose_reference={config['pose_reference']!r} is not one of "
                         f"{geometry.POSE_REFERENCES}")
    if config["role"] not in ROLES:
        raise ValueError(f"{where}: role={config['role']!r} is not one of {ROLES}")
    FlowSchedule(shift=float(config["shift"]), denoising_steps=tuple(config["denoising_steps"]))   # validates
    if len(config["image_size"]) != 2:
        raise ValueError(f"{where}: image_size={config['image_size']!r}: expected [H, W]")
    return config


def build_bundle(config: dict[str, Any], weights: str | Path, where: str, prefer: str = "ema") -> Bundle:
    network = build_network(config)
    load_network_weights(network, weights, prefer=prefer, field=f"{where} weights")
    codec = _instantiate(config["codec"], LatentCodec, "codec", CODECS)
    return Bundle(network.eval().requires_grad_(False), codec.eval(), config)


def evenly_spaced_steps(count: int) -> tuple[int, ...]:
    """``count`` denoising timesteps evenly spaced from 1000: 1000, 1000 (count - 1) / count, ..."""
    if count < 1:
        raise ValueError(f"steps={count} must be >= 1")
    return tuple(round(1000 * (count - k) / count) for k in range(count))


def read_bundle_config(path: str | Path) -> dict[str, Any]:
    """The checked ``config.yaml`` of a bundle folder, without loading its weights."""
    path = Path(path)
    if not (path / BUNDLE_CONFIG).is_file() or not (path / BUNDLE_WEIGHTS).is_file():
        raise FileNotFoundError(f"{path} is not a realcam bundle: it needs {BUNDLE_CONFIG} and {BUNDLE_WEIGHTS} "
                                f"(write one with `realcam export --config YAML --ckpt CKPT --out {path}`)")
    try:
        config = yaml.safe_load((path / BUNDLE_CONFIG).read_text())
    except yaml.YAMLError as err:
        raise ValueError(f"{path / BUNDLE_CONFIG} is not valid YAML ({str(err).splitlines()[0]}): fix the file or "
                         f"export the bundle again") from None
    if config is not None and not isinstance(config, dict):
        raise ValueError(f"{path / BUNDLE_CONFIG} holds a {type(config).__name__}, not a mapping of bundle keys "
                         f"(docs/streaming.md, Bundles)")
    return _check_config(config or {}, str(path))


def load_bundle(path: str | Path) -> Bundle:
    """Read a bundle folder (``model.safetensors`` + ``config.yaml``, and ``text.npy`` when there is one)."""
    path = Path(path)
    config = read_bundle_config(path)
    bundle = build_bundle(config, path / BUNDLE_WEIGHTS, str(path))
    bundle.path = path
    if (path / BUNDLE_TEXT).is_file():
        bundle.text = read_text_embedding(path / BUNDLE_TEXT, bundle.network, f"{path}'s {BUNDLE_TEXT}")
    return bundle


def read_text_embedding(path: str | Path, network: nn.Module, field_name: str) -> Tensor:
    """A prompt embedding ``[L, D]`` from a ``.npy`` (umT5 outputs: ``realcam data encode`` writes
    ``text_empty.npy`` and ``KEY.text.npy``), checked against the network's ``text_dim``."""
    path = Path(path)
    text_dim = getattr(network, "text_dim", None)
    if text_dim is None:
        raise ValueError(f"{field_name}: {type(network).__name__} takes no text (text_dim is None): leave it out")
    if not path.is_file():
        raise FileNotFoundError(f"{field_name}: {path} does not exist: give an [L, {text_dim}] .npy of umT5 "
                                f"embeddings (`realcam data encode` writes OUT/text_empty.npy)")
    try:
        text = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as err:
        raise ValueError(f"{field_name}: {path} cannot be read as a .npy array ({err})") from None
    if text.ndim != 2 or text.shape[1] != text_dim or not np.issubdtype(text.dtype, np.floating):
        raise ValueError(f"{field_name}: {path} holds {text.dtype} {list(text.shape)}, but the network needs a float "
                         f"[L, {text_dim}] prompt embedding (umT5 outputs of its text_dim)")
    return torch.from_numpy(text.astype(np.float32))


def bundled_model(name: str = "tiny_student") -> Path:
    """The folder of a bundle shipped in ``realcam/assets``; a clear error if it was never exported."""
    path = ASSETS / name
    if not (path / BUNDLE_WEIGHTS).is_file():
        role = "student" if "student" in name else "teacher"
        config = "configs/student/tiny_dmd.yaml" if role == "student" else "configs/teacher/tiny.yaml"
        raise FileNotFoundError(
            f"the bundled model folder {path} is missing (or has no {BUNDLE_WEIGHTS}). It is produced from a trained "
            f"run by `realcam export --config {config} --ckpt RUN/checkpoints/last.ckpt --out {path} --role {role}`; "
            f"or pass --bundle DIR (any exported bundle) instead")
    return path


def _signature_defaults(class_path: str | None) -> dict[str, Any]:
    if not class_path:
        return {}
    import importlib

    module, _, name = class_path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        return {}
    return {k: p.default for k, p in inspect.signature(cls.__init__).parameters.items()
            if p.default is not inspect.Parameter.empty}


def read_training_config(path: str | Path, role: str | None = None) -> dict[str, Any]:
    """A training YAML (``realcam fit --config``) -> the bundle config (without provenance).

    The network is ``model.init_args.generator`` (student systems, role student) or ``.denoiser`` (teacher);
    codec, shift, denoising_steps and pose_reference come from ``model.init_args`` or, when absent, the model
    class's defaults; image_size from ``data.init_args.image_size``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--config {path} does not exist: give the training YAML of the run")
    return bundle_config_of(yaml.safe_load(path.read_text()) or {}, str(path), role)


def run_bundle_config(ckpt: str | Path, config: str | Path | None = None, role: str | None = None) -> dict[str, Any]:
    """The bundle config of a training run: a Lightning ``.ckpt`` describes its run itself (the YAML ``config``
    fills only what it lacks, and a contradicting value is an error naming the key:
    :func:`realcam.run_config.merged_run_config`); a bare ``.safetensors`` needs the YAML."""
    from realcam.run_config import merged_run_config

    if Path(ckpt).suffix == ".safetensors":
        if config is None:
            raise ValueError(f"{ckpt} holds bare weights, no run config: pass the training YAML (--config)")
        return read_training_config(config, role)
    run = merged_run_config(ckpt, config)
    init = (run["model"] or {}).get("init_args") or {}
    if not {"generator", "denoiser"} & set(init):
        raise ValueError(f"{ckpt} records no model config with its network (an older run, or a system built in "
                         f"Python): pass the run's training YAML (--config; config= in Python)")
    out = bundle_config_of(run, str(ckpt), role)
    out["global_step"] = run["global_step"]
    return out


def bundle_config_of(cfg: dict[str, Any], where: str, role: str | None = None) -> dict[str, Any]:
    """A run config ``{"model": {class_path, init_args}, "data": ...}`` -> the bundle config (see
    :func:`read_training_config`)."""
    path = where
    model = cfg.get("model") or {}
    init = dict(model.get("init_args") or {})
    key = "generator" if "generator" in init else "denoiser" if "denoiser" in init else None
    if key is None:
        raise ValueError(f"{path}: model.init_args has neither 'generator' (student) nor 'denoiser' (teacher)")
    defaults = _signature_defaults(model.get("class_path"))
    pick = lambda name, fallback: init.get(name, defaults.get(name, fallback))  # noqa: E731
    schedule = FlowSchedule()
    image_size = ((cfg.get("data") or {}).get("init_args") or {}).get("image_size")
    out = {"network": init[key], "codec": pick("codec", "pixel"), "shift": float(pick("shift", 3.0)),
           "denoising_steps": [int(s) for s in pick("denoising_steps", schedule.denoising_steps)],
           "pose_reference": pick("pose_reference", "first_source"),
           "image_size": None if image_size is None else [int(v) for v in image_size],
           "fps": 8.0, "role": role or ("student" if key == "generator" else "teacher")}
    if init.get(f"{key}_args"):
        out["network_args"] = dict(init[f"{key}_args"])
    if isinstance(out["codec"], str):      # a registry name: store the class path so the bundle is explicit
        codec = CODECS.build(out["codec"])
        out["codec"] = {"class_path": f"{type(codec).__module__}.{type(codec).__name__}",
                        "init_args": {"factor": codec.factor} if hasattr(codec, "factor") else {}}
    return out


def export_bundle(network: nn.Module, out: str | Path, config: dict[str, Any], overwrite: bool = False,
                  text: Tensor | None = None) -> Path:
    """Write ``network``'s weights and ``config`` (and the prompt embedding ``text`` [L, D] as ``text.npy``) as a
    bundle folder (atomically: a temp folder, then renamed)."""
    from safetensors.torch import save_file

    out = Path(out)
    config = _check_config(dict(config), str(out))
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise FileExistsError(f"{out} already exists and is not empty: pass --overwrite (overwrite=True)")
    tmp = out.with_name(f".{out.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        state = {k: v.detach().to("cpu").contiguous() for k, v in network.state_dict().items()}
        save_file(state, str(tmp / BUNDLE_WEIGHTS), metadata={"format": "realcam-bundle", "role": config["role"]})
        (tmp / BUNDLE_CONFIG).write_text(yaml.safe_dump(config, sort_keys=False))
        if text is not None:
            np.save(tmp / BUNDLE_TEXT, torch.as_tensor(text, dtype=torch.float32).cpu().numpy())
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def export_checkpoint(config: str | Path | None, ckpt: str | Path, out: str | Path, role: str | None = None,
                      prefer: str = "ema", fps: float | None = None, image_size: Sequence[int] | None = None,
                      provenance: dict[str, Any] | None = None, overwrite: bool = False,
                      network_args: dict[str, Any] | None = None, text: str | Path | None = None) -> Path:
    """A training run (Lightning ``.ckpt``, EMA weights by default; the YAML only for what it lacks) -> a bundle
    folder.

    ``network_args`` override the network's ``init_args`` for inference (parameter-free options such as
    ``reproject_copy_gate``); the weights must still load into the result. ``text``: a ``.npy`` prompt
    embedding [L, D] stored as the bundle's ``text.npy`` (a network that reads text streams with it by default)."""
    bundle_cfg = run_bundle_config(ckpt, config, role)
    trained_steps = bundle_cfg.pop("global_step", None)
    if network_args:
        if not isinstance(bundle_cfg["network"], dict):
            raise ValueError(f"network_args need the network as class_path/init_args, but the run names "
                             f"{bundle_cfg['network']!r}: put the overrides into its generator_args")
        network = bundle_cfg["network"] = dict(bundle_cfg["network"])
        network["init_args"] = {**(network.get("init_args") or {}), **network_args}
    if image_size is not None:
        bundle_cfg["image_size"] = [int(v) for v in image_size]
    if bundle_cfg["image_size"] is None:
        raise ValueError(f"{config} has no data.init_args.image_size: pass --image-size H,W")
    if fps is not None:
        bundle_cfg["fps"] = float(fps)
    bundle_cfg["provenance"] = {"source_ckpt": str(ckpt), "global_step": trained_steps,
                                "config": None if config is None else str(config), "weights": prefer,
                                "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                                **(provenance or {})}
    bundle = build_bundle(bundle_cfg, ckpt, str(ckpt), prefer)
    network = bundle_cfg["network"]
    if isinstance(network, dict) and network.get("class_path") == "realcam.pretrained.PretrainedWan":
        from realcam.pretrained import standalone_spec      # the bundle's weights replace the pretrained ones

        bundle_cfg["network"] = standalone_spec(network.get("init_args") or {})
    embedding = None if text is None else read_text_embedding(text, bundle.network, "--text")
    return export_bundle(bundle.network, out, bundle_cfg, overwrite, text=embedding)
