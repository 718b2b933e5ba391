"""Streaming inference: push a source frame and a target pose, get the target frame (DESIGN §1.3).

:class:`StreamingGenerator` wraps a causal student: each chunk is generated with the steps and noise draws of
:func:`realcam.systems.rollout.rollout_chunk` (the function self-rollout training and offline evaluation use),
with a KV cache of ``sink`` chunks plus a rolling ``window`` and noise drawn from a generator seeded at
:meth:`~StreamingGenerator.reset`. By default each chunk's clean cache pass runs inside the next chunk's first
denoising pass (``rollout_chunk(previous=..., defer_cache_pass=True)``), so a stream equals the offline causal
rollout to float rounding; with ``fuse_cache_pass=False`` each chunk commits its own cache pass and the stream
equals the rollout bit for bit.

A *bundle* is a folder holding a trained network: ``model.safetensors`` (bare weights, the EMA) and
``config.yaml`` (network and codec ``class_path``/``init_args``, schedule, pose reference, image size, fps,
role, provenance). :func:`export_checkpoint` writes one from a training run (``realcam export``);
:func:`load_bundle` reads it back. See docs/streaming.md.
"""
from __future__ import annotations

import inspect
import math
import shutil
import time
import warnings
from collections import deque
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import yaml
from torch import Tensor, nn

from realcam import geometry
from realcam.device import checked_device
from realcam.modules.codecs import LatentCodec
from realcam.modules.cond import Cond
from realcam.modules.flow import FlowSchedule
from realcam.registry import BACKBONES, CODECS
from realcam.systems.networks import load_network_weights
from realcam.systems.rollout import rollout_chunk, supports_fused_cache_pass

ASSETS = Path(__file__).resolve().parent / "assets"
BUNDLE_WEIGHTS, BUNDLE_CONFIG = "model.safetensors", "config.yaml"
ROLES = ("student", "teacher")
DTYPES = ("fp32", "bf16")
DEFAULT_FOV_DEG = 60.0      # horizontal field of view assumed when the source intrinsics are unknown


# ================================================================================================ bundles
@dataclass
class Bundle:
    """A loaded bundle: the network (eval mode, no grad), its codec and the parsed ``config.yaml``."""

    network: nn.Module
    codec: LatentCodec
    config: dict[str, Any]
    path: Path | None = None

    def options(self) -> dict[str, Any]:
        """The :class:`StreamingGenerator` arguments the config fixes."""
        c = self.config
        return dict(image_size=tuple(c["image_size"]), shift=float(c["shift"]),
                    denoising_steps=tuple(c["denoising_steps"]), pose_reference=c["pose_reference"],
                    fps=float(c["fps"]))


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


def _build(config: dict[str, Any], weights: str | Path, where: str, prefer: str = "ema") -> Bundle:
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
    """Read a bundle folder (``model.safetensors`` + ``config.yaml``)."""
    path = Path(path)
    config = read_bundle_config(path)
    bundle = _build(config, path / BUNDLE_WEIGHTS, str(path))
    bundle.path = path
    return bundle


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
    cfg = yaml.safe_load(path.read_text()) or {}
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


def export_bundle(network: nn.Module, out: str | Path, config: dict[str, Any], overwrite: bool = False) -> Path:
    """Write ``network``'s weights and ``config`` as a bundle folder (atomically: a temp folder, then renamed)."""
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
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def export_checkpoint(config: str | Path, ckpt: str | Path, out: str | Path, role: str | None = None,
                      prefer: str = "ema", fps: float | None = None, image_size: Sequence[int] | None = None,
                      provenance: dict[str, Any] | None = None, overwrite: bool = False,
                      network_args: dict[str, Any] | None = None) -> Path:
    """A training run (YAML + Lightning ``.ckpt``, EMA weights by default) -> a bundle folder.

    ``network_args`` override the network's ``init_args`` for inference (parameter-free options such as
    ``reproject_copy_gate``); the weights must still load into the result."""
    bundle_cfg = read_training_config(config, role)
    if network_args:
        if not isinstance(bundle_cfg["network"], dict):
            raise ValueError(f"network_args need the network as class_path/init_args, but {config} names "
                             f"{bundle_cfg['network']!r}: put the overrides into its generator_args")
        network = bundle_cfg["network"] = dict(bundle_cfg["network"])
        network["init_args"] = {**(network.get("init_args") or {}), **network_args}
    if image_size is not None:
        bundle_cfg["image_size"] = [int(v) for v in image_size]
    if bundle_cfg["image_size"] is None:
        raise ValueError(f"{config} has no data.init_args.image_size: pass --image-size H,W")
    if fps is not None:
        bundle_cfg["fps"] = float(fps)
    bundle_cfg["provenance"] = {"source_ckpt": str(ckpt), "config": str(config), "weights": prefer,
                                "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                                **(provenance or {})}
    bundle = _build(bundle_cfg, ckpt, str(ckpt), prefer)
    return export_bundle(bundle.network, out, bundle_cfg, overwrite)


def _float_cpu(x: Any) -> Tensor:
    return (x if torch.is_tensor(x) else torch.as_tensor(np.asarray(x))).detach().float().cpu()


# ================================================================================================ stats
LATENCY_HISTORY = 100_000    # per-push latencies a stream keeps (about an hour at 30 FPS); totals cover everything


@dataclass
class StreamStats:
    """Timings of one stream: push latencies (ms), frames out and the time to the first frame.

    Memory stays bounded however long the stream runs: ``latency_ms`` keeps the last ``LATENCY_HISTORY``
    pushes (percentiles are over those), while the counts, the mean, the maximum and the FPS cover every push.
    """

    latency_ms: deque = field(default_factory=lambda: deque(maxlen=LATENCY_HISTORY))
    frames: int = 0
    chunks: int = 0
    first_frame_ms: float | None = None
    pushes: int = 0
    busy_ms: float = 0.0
    max_ms: float = 0.0

    def add(self, ms: float) -> None:
        self.latency_ms.append(ms)
        self.pushes += 1
        self.busy_ms += ms
        self.max_ms = max(self.max_ms, ms)

    def _q(self, q: float) -> float | None:
        return float(np.percentile(self.latency_ms, q)) if self.latency_ms else None

    def as_dict(self) -> dict[str, Any]:
        busy = self.busy_ms / 1000.0
        return {"pushes": self.pushes, "frames": self.frames, "chunks": self.chunks,
                "latency_ms_mean": self.busy_ms / self.pushes if self.pushes else None,
                "latency_ms_p50": self._q(50), "latency_ms_p90": self._q(90),
                "latency_ms_max": self.max_ms if self.pushes else None,
                "fps": self.frames / busy if busy > 0 else None, "time_to_first_frame_ms": self.first_frame_ms,
                "latency_ms": list(self.latency_ms), "latency_ms_first_push": self.pushes - len(self.latency_ms)}


# ================================================================================================ streaming
class StreamingGenerator:
    """A causal student that turns (source frame, target pose) pushes into target frames, chunk by chunk.

    Frames in: uint8 ``[H, W, 3]`` (numpy or tensor, 0..255) or float ``[3, H, W]`` in [-1, 1], at the stream's
    ``image_size`` (other sizes are rejected: resize/crop first, as ``realcam stream`` does). Frames out: float32
    ``[3, H, W]`` in [-1, 1] on ``device`` (:meth:`to_uint8` converts); with ``chunk_frames > 1`` a push returns
    None until its chunk is complete and then the chunk's frames ``[c, 3, H, W]``.

    Poses (OpenCV camera-to-world ``[4, 4]``, metres): the model sees
    ``relative_poses(source_c2w, target_c2w, pose_reference)``. With ``source_c2w=None`` the source camera is the
    identity, so under ``current_source`` (how the tiny student is trained) ``target_c2w`` is the target camera
    *relative to the source camera of this frame*, and under ``first_source`` relative to the first source
    camera after :meth:`reset`. Give ``source_c2w`` (world) to pass both in world coordinates instead.

    Options: ``steps`` (an int n: timesteps 1000, 1000 (n-1)/n, ...; or an explicit descending list),
    ``sink`` / ``window`` chunks of the KV cache (default: the network's), ``dtype`` ``fp32`` or ``bf16``
    (autocast), ``device``, ``seed`` (the noise generator, re-seeded by every reset), ``fuse_cache_pass``
    (default on where the network supports it: a chunk's clean cache pass runs inside the next chunk's first
    denoising pass, :meth:`CrossFrameDiT.commit_and_forward`, one transformer pass per frame fewer; the outputs
    equal the unfused stream's to float rounding, and the cache commits each chunk one push late).
    """

    def __init__(self, network: nn.Module, codec: LatentCodec, *, image_size: Sequence[int] = (32, 32),
                 shift: float = 3.0, denoising_steps: Sequence[int] = (1000, 750, 500, 250),
                 pose_reference: str = "current_source", fps: float = 8.0, steps: int | Sequence[int] | None = None,
                 sink: int | None = None, window: int | None | str = "default", dtype: str = "fp32",
                 device: str | torch.device = "cpu", seed: int = 0, fuse_cache_pass: bool | None = None):
        if getattr(network, "attention_mode", "causal") != "causal" or not hasattr(network, "new_cache"):
            raise ValueError("network is bidirectional (a teacher?): streaming needs a causal student "
                             "(attention_mode='causal'); export a role: student bundle")
        if getattr(codec, "temporal_factor", 1) != 1:
            raise ValueError(f"codec {type(codec).__name__} compresses time (temporal_factor="
                             f"{codec.temporal_factor}); streaming needs a frame-wise codec")
        if dtype not in DTYPES:
            raise ValueError(f"dtype={dtype!r}: choose one of {DTYPES}")
        if isinstance(steps, int):
            denoising_steps = evenly_spaced_steps(steps)
        elif steps is not None:
            denoising_steps = [int(s) for s in steps]
        self.schedule = FlowSchedule(shift=float(shift), denoising_steps=tuple(denoising_steps))
        self.device = checked_device(device)
        self.network = network.to(self.device).eval()     # generation runs under no_grad; grads flags untouched
        self.codec = codec.to(self.device).eval()
        self.sigmas = self.schedule.student_sigmas(device=self.device)
        self.chunk_frames = int(network.chunk_frames)
        self.trained_pose_reference, self.fps, self.dtype, self.seed = pose_reference, float(fps), dtype, int(seed)
        self.sink, self.window = sink, window
        supported = supports_fused_cache_pass(network)
        if fuse_cache_pass and not supported:
            raise ValueError(f"fuse_cache_pass=True needs a network with commit_and_forward "
                             f"({type(network).__name__}); leave it unset or False")
        self.fuse_cache_pass = supported if fuse_cache_pass is None else bool(fuse_cache_pass)
        self.image_size = tuple(int(v) for v in image_size)
        self.config: dict[str, Any] = {}
        self.reset()

    @classmethod
    def from_checkpoint(cls, path: str | Path, config: str | Path | None = None, *, role: str | None = None,
                        prefer: str = "ema", **options: Any) -> "StreamingGenerator":
        """From a bundle folder, or a Lightning ``.ckpt`` / ``.safetensors`` plus its training YAML (``config``).

        ``options`` are the constructor's keywords (``steps``, ``sink``, ``window``, ``dtype``, ``device``,
        ``seed``, ...) and win over the bundle's values.
        """
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"{path} does not exist: give a bundle folder (realcam export) or a .ckpt with "
                                    f"config=")
        if path.is_dir():
            if config is not None:
                raise ValueError(f"{path} is a bundle folder, which holds its own config: drop config=")
            bundle = load_bundle(path)
        else:
            if config is None:
                raise ValueError(f"{path} is a checkpoint file: pass config= (its training YAML), or export a "
                                 f"bundle folder with `realcam export`")
            cfg = read_training_config(config, role)
            if cfg["image_size"] is None:
                if "image_size" not in options:
                    raise ValueError(f"{config} has no data.init_args.image_size: pass image_size=(H, W)")
                cfg["image_size"] = list(options["image_size"])
            bundle = _build(cfg, path, str(path), prefer)
        gen = cls(bundle.network, bundle.codec, **{**bundle.options(), **options})
        gen.config = bundle.config
        return gen

    # ---- stream state ----------------------------------------------------------------------------
    def reset(self, K: Tensor | np.ndarray | None = None, *, fov_deg: float | None = None,
              image_size: Sequence[int] | None = None, pose_reference: str | None = None,
              target_K: Tensor | np.ndarray | None = None, seed: int | None = None) -> None:
        """Start a new stream: empty KV cache, noise generator re-seeded, stats cleared.

        K: source intrinsics ``[3, 3]`` in pixels of ``image_size`` (else a centred camera with horizontal
        field of view ``fov_deg``, default 60). target_K: the target camera's (default K). pose_reference:
        ``current_source`` / ``first_source`` (default: the one the model was trained with).
        """
        size = tuple(int(v) for v in (image_size or self.image_size))
        step = self.codec.spatial_factor * max(self.network.patch[1:])
        if len(size) != 2 or min(size) <= 0 or size[0] % step or size[1] % step:
            raise ValueError(f"image_size={size}: expected (H, W), both multiples of {step} (codec factor x patch)")
        if K is not None and fov_deg is not None:
            raise ValueError("give the source intrinsics K or fov_deg, not both")
        if K is None:
            K = geometry.fov_intrinsics(size[0], size[1], DEFAULT_FOV_DEG if fov_deg is None else float(fov_deg))
        K = geometry.validate_intrinsics(_float_cpu(K), name="K")
        tK = K if target_K is None else geometry.validate_intrinsics(_float_cpu(target_K), name="target_K")
        if K.shape != (3, 3) or tK.shape != (3, 3):
            raise ValueError(f"K {tuple(K.shape)} and target_K {tuple(tK.shape)} must be [3, 3] pixel intrinsics")
        reference = pose_reference or self.trained_pose_reference
        if reference not in geometry.POSE_REFERENCES:
            raise ValueError(f"pose_reference={reference!r}: choose one of {geometry.POSE_REFERENCES}")
        if reference != self.trained_pose_reference:
            warnings.warn(f"pose_reference={reference!r} but the model was trained with "
                          f"{self.trained_pose_reference!r}: its camera condition will be off-distribution")
        # everything is valid: now replace the state
        self.image_size, self.pose_reference = size, reference
        self.K, self.target_K = K.to(self.device), tK.to(self.device)
        if seed is not None:
            self.seed = int(seed)
        self.cache = self.network.new_cache(sink=self.sink, window=self.window)
        self.noise = torch.Generator().manual_seed(self.seed)   # CPU: the draws do not depend on the device
        self._pending: list[tuple[Tensor, Tensor, Tensor]] = []
        self._uncommitted: tuple[Tensor, Cond] | None = None    # the last chunk, its cache pass still to run
        self._first_source: Tensor | None = None
        self._t_first: float | None = None
        self.stats = StreamStats()
        self.closed = False

    def close(self) -> StreamStats:
        """End the stream (buffered frames of an incomplete chunk are dropped); returns the stats."""
        self.closed = True
        self._pending = []
        return self.stats

    def __enter__(self) -> "StreamingGenerator":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @property
    def pending(self) -> int:
        """Frames buffered toward the next chunk (always 0 when chunk_frames == 1)."""
        return len(self._pending)

    # ---- input checks (all before any state changes) ---------------------------------------------
    def _frame(self, frame: Any, name: str) -> Tensor:
        # ascontiguousarray: views such as frame[..., ::-1] (BGR -> RGB) have negative strides torch refuses
        x = frame if torch.is_tensor(frame) else torch.from_numpy(np.ascontiguousarray(frame))
        H, W = self.image_size
        if x.dtype == torch.uint8:
            if x.ndim != 3 or x.shape[-1] != 3:
                raise ValueError(f"{name} is uint8 {tuple(x.shape)}: expected [H, W, 3] RGB")
            hw = tuple(x.shape[:2])
            x = x.to(self.device).permute(2, 0, 1).float().div_(127.5).sub_(1.0)
        elif x.is_floating_point():
            if x.ndim != 3 or x.shape[0] != 3:
                raise ValueError(f"{name} is float {tuple(x.shape)}: expected [3, H, W] in [-1, 1] "
                                 f"(or uint8 [H, W, 3])")
            hw = tuple(x.shape[1:])
            x = x.to(self.device, torch.float32)
            lo, hi = torch.aminmax(x)
            if not (math.isfinite(lo) and math.isfinite(hi)):
                raise ValueError(f"{name} has NaN or infinite values")
            if lo < -1.01 or hi > 1.01:
                raise ValueError(f"{name} has values in [{float(lo):.3g}, {float(hi):.3g}]: float frames must be in "
                                 f"[-1, 1] (x / 127.5 - 1 for 0..255)")
        else:
            raise TypeError(f"{name} has dtype {x.dtype}: expected uint8 [H, W, 3] or float [3, H, W]")
        if hw != (H, W):
            raise ValueError(f"{name} is {hw[0]}x{hw[1]} but the stream runs at {H}x{W}: resize/crop the frame "
                             f"first (realcam.stream_cli.fit_frames, as `realcam stream` does) or reset(image_size=)")
        return x

    def _pose(self, c2w: Any, name: str, n: int | None) -> Tensor:
        x = c2w if torch.is_tensor(c2w) else torch.from_numpy(np.ascontiguousarray(c2w))
        if not x.is_floating_point():
            x = x.double()
        want = (4, 4) if n is None else (n, 4, 4)
        if tuple(x.shape) != want:
            raise ValueError(f"{name} has shape {tuple(x.shape)}: expected {list(want)} (OpenCV camera-to-world)")
        return geometry.validate_c2w(x.to(torch.float32), name=name).to(self.device)

    def _check_open(self) -> None:
        if self.closed:
            raise RuntimeError("push after close(): the stream is closed; call reset(...) to start a new one")

    # ---- generation ----------------------------------------------------------------------------------
    def push(self, source_frame: Any, target_c2w: Any, source_c2w: Any = None) -> Tensor | None:
        """One source frame and its target pose -> the target frame ``[3, H, W]`` in [-1, 1].

        With chunk_frames > 1: None until the chunk is complete, then ``[chunk_frames, 3, H, W]``.
        Invalid input raises (naming the field) and leaves the stream exactly as it was; so does an exception
        inside generation (an interrupt, out of memory): push the same frame again to go on.
        """
        t0 = time.perf_counter()
        self._check_open()
        frame = self._frame(source_frame, "source_frame")
        tgt = self._pose(target_c2w, "target_c2w", None)
        src = torch.eye(4, device=self.device) if source_c2w is None else self._pose(source_c2w, "source_c2w", None)
        t_first = self._t_first
        self._mark_start(t0)
        self._pending.append((frame, tgt, src))
        out = None
        if len(self._pending) == self.chunk_frames:
            frames, tgts, srcs = (torch.stack(v) for v in zip(*self._pending))
            try:
                out = self._generate(frames, tgts, srcs)
            except BaseException:       # interrupted inside generation: this frame was never pushed
                self._pending.pop()
                self._t_first = t_first
                raise
            self._pending = []
            out = out[0] if self.chunk_frames == 1 else out
        self._record(t0, out is not None)
        return out

    def push_chunk(self, source_frames: Any, target_c2w: Any, source_c2w: Any = None) -> Tensor:
        """``chunk_frames`` frames at once: source frames (a sequence or a stacked array) and target poses
        ``[c, 4, 4]`` (source poses likewise, or None) -> ``[c, 3, H, W]``."""
        t0 = time.perf_counter()
        self._check_open()
        c = self.chunk_frames
        if self._pending:
            raise ValueError(f"{len(self._pending)} frames are buffered from push(): complete that chunk with push() "
                             f"before push_chunk()")
        if len(source_frames) != c:
            raise ValueError(f"source_frames has {len(source_frames)} frames: push_chunk takes chunk_frames={c}")
        frames = torch.stack([self._frame(f, f"source_frames[{i}]") for i, f in enumerate(source_frames)])
        tgts = self._pose(target_c2w, "target_c2w", c)
        srcs = torch.eye(4, device=self.device).repeat(c, 1, 1) if source_c2w is None else \
            self._pose(source_c2w, "source_c2w", c)
        t_first = self._t_first
        self._mark_start(t0)
        try:
            out = self._generate(frames, tgts, srcs)
        except BaseException:
            self._t_first = t_first
            raise
        self._record(t0, True)
        return out

    def _mark_start(self, t0: float) -> None:
        if self._t_first is None:
            self._t_first = t0

    def _record(self, t0: float, produced: bool) -> None:
        if produced and self.device.type == "cuda":
            torch.cuda.synchronize(self.device)     # honest latency: the frame is ready when push returns
        now = time.perf_counter()
        self.stats.add((now - t0) * 1000.0)
        if produced and self.stats.first_frame_ms is None:
            self.stats.first_frame_ms = (now - self._t_first) * 1000.0

    def _autocast(self):
        if self.dtype == "fp32":
            return nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)

    @torch.no_grad()
    def _generate(self, frames: Tensor, tgt: Tensor, src: Tensor) -> Tensor:
        """frames [c, 3, H, W], poses [c, 4, 4] -> [c, 3, H, W]: encode and pose once, then the chunk's passes."""
        c = frames.shape[0]
        first = src[0] if self._first_source is None else self._first_source
        ref = src if self.pose_reference == "current_source" else first.expand(c, 4, 4)
        rel = geometry.relative_poses(ref, tgt, "current_source")      # inv(ref[t]) @ tgt[t]
        state, snapshot = self.noise.get_state(), self.cache.snapshot()
        try:
            with self._autocast():
                latents = self.codec.encode(frames[None])
                cond = Cond(source=latents, target_c2w=rel[None], target_K=self.target_K.expand(1, c, 3, 3),
                            source_K=self.K.expand(1, c, 3, 3), image_size=self.image_size)
                x0, _, _ = rollout_chunk(self.network, cond, self.sigmas, self.cache, self.noise, latents,
                                         previous=self._uncommitted, defer_cache_pass=self.fuse_cache_pass)
                out = self.codec.decode(x0)[0].float().clamp_(-1.0, 1.0)
        except BaseException:
            # A failed chunk leaves no trace: the same noise, the cache as it was (a commit made before the
            # failure, this chunk's or the fused pass's of the previous chunk, is undone), nothing staged.
            self.noise.set_state(state)
            self.cache.restore(snapshot)
            raise
        if self.fuse_cache_pass:
            self._uncommitted = (x0, cond)   # its cache pass runs inside the next chunk's first pass
        self._first_source = first
        self.stats.frames += c
        self.stats.chunks += 1
        return out

    @staticmethod
    def to_uint8(frames: Tensor) -> np.ndarray:
        """``[3, H, W]`` or ``[T, 3, H, W]`` in [-1, 1] -> uint8 ``[H, W, 3]`` / ``[T, H, W, 3]`` (numpy)."""
        x = ((frames.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu()
        return x.movedim(-3, -1).numpy()
