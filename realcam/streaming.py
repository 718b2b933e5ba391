"""Streaming inference: push a source frame and a target pose, get the target frame (DESIGN §1.3).

:class:`StreamingGenerator` wraps a causal student: each chunk is generated with the steps and noise draws of
:func:`realcam.rollout.rollout_chunk` (the function self-rollout training and offline evaluation use),
with a KV cache of ``sink`` chunks plus a rolling ``window`` and noise drawn from a generator seeded at
:meth:`~StreamingGenerator.reset`. By default each chunk's clean cache pass runs inside the next chunk's first
denoising pass (``rollout_chunk(previous=..., defer_cache_pass=True)``), so a stream equals the offline causal
rollout to float rounding; with ``fuse_cache_pass=False`` each chunk commits its own cache pass and the stream
equals the rollout bit for bit.

A *bundle* (:mod:`realcam.bundle`) is a folder holding a trained network; :meth:`StreamingGenerator.from_checkpoint`
reads one. Nothing here imports Lightning.
"""
from __future__ import annotations

import math
import time
import warnings
from collections import deque
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from realcam import geometry
from realcam.device import checked_device
from realcam.modules.codecs import LatentCodec
from realcam.modules.cond import Cond
from realcam.bundle import (build_bundle, bundled_model, evenly_spaced_steps, load_bundle,  # noqa: F401 (public)
                            read_text_embedding, run_bundle_config)
from realcam.modules.flow import FlowSchedule
from realcam.modules.protocol import check_causal
from realcam.rollout import rollout_chunk, supports_fused_cache_pass

DTYPES = ("fp32", "bf16")
DEFAULT_FOV_DEG = 60.0      # horizontal field of view assumed when the source intrinsics are unknown


def _float_cpu(x: Any) -> Tensor:
    return (x if torch.is_tensor(x) else torch.as_tensor(np.asarray(x))).detach().float().cpu()


# ================================================================================================ stats
LATENCY_HISTORY = 100_000    # per-push latencies a stream keeps (about an hour at 30 FPS); totals cover everything


@dataclass
class StreamStats:
    """Timings of one stream: push latencies (ms), frames out, the time to the first frame, and per chunk its
    compute time and the video frames it buffers.

    Latency has two parts. *Buffering*: a chunk runs once its last source frame is in, so its first frame waits
    for the ``n - 1`` frames pushed after it (n: the chunk's video frames; with Wan's VAE and 3 latent frames
    per chunk, 9 for the first chunk and 12 after). In a live stream those arrive at ``fps``, so that wait is
    ``(n - 1) / fps``. *Compute*: the push that completes a chunk runs it (``chunk_ms``). ``as_dict`` reports
    both, in frames and in ms, and their sum for the chunk's first frame (``frame_latency_ms_max``).

    Memory stays bounded however long the stream runs: ``latency_ms`` and ``chunk_ms`` keep the last
    ``LATENCY_HISTORY`` values (percentiles are over those), while the counts, the means, the maxima and the FPS
    cover everything.
    """

    latency_ms: deque = field(default_factory=lambda: deque(maxlen=LATENCY_HISTORY))
    frames: int = 0
    chunks: int = 0
    first_frame_ms: float | None = None
    pushes: int = 0
    busy_ms: float = 0.0
    max_ms: float = 0.0
    fps: float | None = None                 # the stream's frame rate, for buffering latency in ms
    chunk_ms: deque = field(default_factory=lambda: deque(maxlen=LATENCY_HISTORY))
    chunk_busy_ms: float = 0.0
    chunk_max_ms: float = 0.0
    chunk_frames_max: int = 0                # the most video frames one chunk buffered
    frames_dropped: int = 0                  # an incomplete chunk's frames, dropped at close()

    def add(self, ms: float) -> None:
        self.latency_ms.append(ms)
        self.pushes += 1
        self.busy_ms += ms
        self.max_ms = max(self.max_ms, ms)

    def add_chunk(self, ms: float, frames: int) -> None:
        """The push that completed a chunk of ``frames`` video frames took ``ms``."""
        self.chunk_ms.append(ms)
        self.chunk_busy_ms += ms
        self.chunk_max_ms = max(self.chunk_max_ms, ms)
        self.chunk_frames_max = max(self.chunk_frames_max, frames)

    def latency(self) -> dict[str, Any]:
        """Buffering (frames, and ms at ``fps``), per-chunk compute (ms) and their sum for a chunk's first frame."""
        wait = max(self.chunk_frames_max - 1, 0)
        wait_ms = wait * 1000.0 / self.fps if self.fps else None
        chunk_mean = self.chunk_busy_ms / self.chunks if self.chunks else None
        return {"buffer_latency_frames": wait, "buffer_latency_ms": wait_ms,
                "chunk_compute_ms_mean": chunk_mean, "chunk_compute_ms_max": self.chunk_max_ms if self.chunks else None,
                "frame_latency_ms_max": None if wait_ms is None or not self.chunks else wait_ms + self.chunk_max_ms,
                "chunk_frames_max": self.chunk_frames_max, "frames_dropped": self.frames_dropped,
                "fps_stream": self.fps}

    def _q(self, q: float) -> float | None:
        return float(np.percentile(self.latency_ms, q)) if self.latency_ms else None

    def as_dict(self) -> dict[str, Any]:
        busy = self.busy_ms / 1000.0
        return {"pushes": self.pushes, "frames": self.frames, "chunks": self.chunks,
                "latency_ms_mean": self.busy_ms / self.pushes if self.pushes else None,
                "latency_ms_p50": self._q(50), "latency_ms_p90": self._q(90),
                "latency_ms_max": self.max_ms if self.pushes else None,
                "fps": self.frames / busy if busy > 0 else None, "time_to_first_frame_ms": self.first_frame_ms,
                "latency_ms": list(self.latency_ms), "latency_ms_first_push": self.pushes - len(self.latency_ms),
                **self.latency(), "chunk_ms": list(self.chunk_ms)}


# ================================================================================================ streaming
class StreamingGenerator:
    """A causal student that turns (source frame, target pose) pushes into target frames, chunk by chunk.

    Frames in: uint8 ``[H, W, 3]`` (numpy or tensor, 0..255) or float ``[3, H, W]`` in [-1, 1], at the stream's
    ``image_size`` (other sizes are rejected: resize/crop first, as ``realcam stream`` does). Frames out: float32
    ``[3, H, W]`` in [-1, 1] on ``device`` (:meth:`to_uint8` converts); with ``chunk_frames > 1`` or a codec that
    compresses time, a push returns None until its chunk is complete and then the chunk's frames ``[n, 3, H, W]``.

    Chunks and codecs: a chunk is ``network.chunk_frames`` (c) *latent* frames, coded through the codec's
    :meth:`~realcam.modules.codecs.LatentCodec.stream` (its causal state carried from chunk to chunk). A
    frame-wise codec (pixel) takes c video frames per chunk. Wan's VAE (a first frame alone, then 4 frames per
    latent frame) takes ``1 + 4 (c - 1)`` video frames for the first chunk and ``4 c`` for every later one
    (c = 3: 9, then 12), so a stream's output follows the 1 + 4k rule; :meth:`next_chunk_frames` says how many
    the chunk being filled needs and :meth:`whole_chunk_frames` how many of T frames fill whole chunks. Every
    chunk gives back as many frames as went in. Frames of an incomplete chunk still buffered at :meth:`close`
    are dropped (counted in ``stats.frames_dropped``).

    Poses with temporal compression: one pose per pushed frame; latent frame i (counted from the stream's start)
    takes the pose of video frame ``codec.pose_frames`` gives, 4 i with Wan's VAE (frame 0, then the last frame
    of each group of 4: ReCamMaster's ``cameras[::4]``, the rule training uses). The other poses of a chunk are
    checked but do not condition it.

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
                 device: str | torch.device = "cpu", seed: int = 0, fuse_cache_pass: bool | None = None,
                 text: Tensor | None = None):
        check_causal(network, "network")
        channels = getattr(network, "in_channels", None)
        if channels is not None and channels != codec.latent_channels:
            raise ValueError(f"codec {type(codec).__name__} gives {codec.latent_channels}-channel latents but the network "
                             f"takes in_channels={channels}: stream the network with the codec it was trained with "
                             f"(a bundle's codec), or build it with in_channels={codec.latent_channels}")
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
        self.text: Tensor | None = None
        self.set_prompt(text)
        self.reset()

    @classmethod
    def from_checkpoint(cls, path: str | Path, config: str | Path | None = None, *, role: str | None = None,
                        prefer: str = "ema", **options: Any) -> "StreamingGenerator":
        """From a bundle folder, or a Lightning ``.ckpt`` / ``.safetensors`` plus its training YAML (``config``).

        ``options`` are the constructor's keywords (``steps``, ``sink``, ``window``, ``dtype``, ``device``,
        ``seed``, ...) and win over the bundle's values. ``text`` (a network that reads text) may also be the
        path of an ``[L, D]`` ``.npy`` prompt embedding; a bundle's ``text.npy`` is the default.
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
            cfg = run_bundle_config(path, config, role)
            cfg["provenance"] = {"source_ckpt": str(path), "global_step": cfg.pop("global_step", None)}
            if cfg["image_size"] is None:
                if "image_size" not in options:
                    raise ValueError(f"{config} has no data.init_args.image_size: pass image_size=(H, W)")
                cfg["image_size"] = list(options["image_size"])
            bundle = build_bundle(cfg, path, str(path), prefer)
        if isinstance(options.get("text"), (str, Path)):
            options["text"] = read_text_embedding(options["text"], bundle.network, "text (realcam stream --text)")
        gen = cls(bundle.network, bundle.codec, **{**bundle.options(), **options})
        gen.config = bundle.config
        return gen

    # ---- stream state ----------------------------------------------------------------------------
    def set_prompt(self, text: Tensor | None) -> None:
        """The prompt of the chunks pushed from now on: text embeddings ``[L, text_dim]`` (or ``[1, L, text_dim]``,
        umT5 outputs) for a network that reads text (``text_dim`` set; Wan). Its K/V are computed once and reused
        by every pass and chunk until the prompt changes."""
        text_dim = self.network.text_dim
        if text is None:
            if text_dim is not None:
                raise ValueError(f"this network reads text (text_dim={text_dim}): pass text= (the prompt's umT5 "
                                 f"embeddings [L, {text_dim}], e.g. `realcam data encode`'s text_empty.npy) or call "
                                 f"set_prompt(text); `realcam stream --text FILE.npy`, or a bundle exported with "
                                 f"`realcam export --text FILE.npy`")
            self.text = None
            return
        if text_dim is None:
            raise ValueError("this network takes no text (text_dim is None): leave text unset")
        text = torch.as_tensor(text, dtype=torch.float32)
        text = text[None] if text.ndim == 2 else text
        if text.ndim != 3 or text.shape[0] != 1 or text.shape[-1] != text_dim:
            raise ValueError(f"text has shape {tuple(text.shape)}: expected [L, {text_dim}] (the prompt's umT5 "
                             f"embeddings)")
        self.text = text.to(self.device)

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
        self.codec_stream = self.codec.stream()                  # the codec's causal state (Wan: feature caches)
        self.latent_frames_done = 0                              # latent frames generated since reset
        self.noise = torch.Generator().manual_seed(self.seed)   # CPU: the draws do not depend on the device
        self._pending: list[tuple[Tensor, Tensor, Tensor]] = []
        self._uncommitted: tuple[Tensor, Cond] | None = None    # the last chunk, its cache pass still to run
        self._first_source: Tensor | None = None
        self._t_first: float | None = None
        self.stats = StreamStats(fps=self.fps)
        self.closed = False

    def close(self) -> StreamStats:
        """End the stream (buffered frames of an incomplete chunk are dropped and counted in
        ``stats.frames_dropped``); returns the stats."""
        if not self.closed:
            self.stats.frames_dropped += len(self._pending)
        self.closed = True
        self._pending = []
        return self.stats

    def __enter__(self) -> "StreamingGenerator":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @property
    def pending(self) -> int:
        """Frames buffered toward the next chunk (always 0 when every push returns a frame)."""
        return len(self._pending)

    def chunk_frames_at(self, latent_start: int) -> int:
        """Video frames of the chunk whose first latent frame is ``latent_start``."""
        before = self.codec.video_frames(latent_start) if latent_start else 0
        return self.codec.video_frames(latent_start + self.chunk_frames) - before

    def next_chunk_frames(self) -> int:
        """Video frames the chunk being filled takes (pushed ones included)."""
        return self.chunk_frames_at(self.latent_frames_done)

    def whole_chunk_frames(self, frames: int) -> int:
        """The most of ``frames`` video frames, from the start of a stream, that fill whole chunks (the rest would
        stay buffered and be dropped at close): with Wan's VAE and c = 3, 81 -> 81 and 80 -> 69."""
        total, latent = 0, 0
        while total + self.chunk_frames_at(latent) <= frames:
            total += self.chunk_frames_at(latent)
            latent += self.chunk_frames
        return total

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
                             f"first (realcam.stream_sources.fit_frames, as `realcam stream` does) or "
                             f"reset(image_size=)")
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

        With chunk_frames > 1 or a codec that compresses time: None until the chunk is complete
        (:meth:`next_chunk_frames`), then the chunk's frames ``[n, 3, H, W]``, as many as were pushed into it.
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
        if len(self._pending) == self.next_chunk_frames():
            frames, tgts, srcs = (torch.stack(v) for v in zip(*self._pending))
            try:
                out = self._generate(frames, tgts, srcs)
            except BaseException:       # interrupted inside generation: this frame was never pushed
                self._pending.pop()
                self._t_first = t_first
                raise
            self._pending = []
            out = out[0] if self._frame_per_push else out
        self._record(t0, out)
        return out

    @property
    def _frame_per_push(self) -> bool:
        return self.chunk_frames == 1 and self.codec.temporal_factor == 1

    def push_chunk(self, source_frames: Any, target_c2w: Any, source_c2w: Any = None) -> Tensor:
        """The next chunk's frames at once (:meth:`next_chunk_frames` of them, n: ``chunk_frames`` for a
        frame-wise codec): source frames (a sequence or a stacked array) and target poses ``[n, 4, 4]`` (source
        poses likewise, or None) -> ``[n, 3, H, W]``."""
        t0 = time.perf_counter()
        self._check_open()
        c = self.next_chunk_frames()
        if self._pending:
            raise ValueError(f"{len(self._pending)} frames are buffered from push(): complete that chunk with push() "
                             f"before push_chunk()")
        if len(source_frames) != c:
            raise ValueError(f"source_frames has {len(source_frames)} frames: push_chunk takes the next chunk's {c} "
                             f"frames (next_chunk_frames(); chunk_frames={self.chunk_frames} latent frames)")
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
        self._record(t0, out)
        return out

    def _mark_start(self, t0: float) -> None:
        if self._t_first is None:
            self._t_first = t0

    def _record(self, t0: float, out: Tensor | None) -> None:
        produced = out is not None
        if produced and self.device.type == "cuda":
            torch.cuda.synchronize(self.device)     # honest latency: the frame is ready when push returns
        now = time.perf_counter()
        self.stats.add((now - t0) * 1000.0)
        if produced:
            self.stats.add_chunk((now - t0) * 1000.0, 1 if out.ndim == 3 else len(out))
            if self.stats.first_frame_ms is None:
                self.stats.first_frame_ms = (now - self._t_first) * 1000.0

    def _autocast(self):
        if self.dtype == "fp32":
            return nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)

    def chunk_pose_frames(self) -> list[int]:
        """Which of the chunk being filled's video frames give its latent frames their poses (indices into the
        chunk): ``codec.pose_frames`` at the stream's global latent index, shifted to the chunk's first frame."""
        start = self.latent_frames_done
        first_video = self.codec.video_frames(start) if start else 0
        return [i - first_video for i in self.codec.pose_frames(self.chunk_frames, start)]

    @torch.no_grad()
    def _generate(self, frames: Tensor, tgt: Tensor, src: Tensor) -> Tensor:
        """frames [n, 3, H, W], poses [n, 4, 4] -> [n, 3, H, W]: encode and pose once, then the chunk's passes."""
        n, c = frames.shape[0], self.chunk_frames
        first = src[0] if self._first_source is None else self._first_source
        ref = src if self.pose_reference == "current_source" else first.expand(n, 4, 4)
        rel = geometry.relative_poses(ref, tgt, "current_source")[self.chunk_pose_frames()]   # inv(ref[t]) @ tgt[t]
        state, snapshot, coded = self.noise.get_state(), self.cache.snapshot(), self.codec_stream.snapshot()
        try:
            with self._autocast():
                latents = self.codec_stream.encode_chunk(frames[None])
                cond = Cond(source=latents, target_c2w=rel[None], target_K=self.target_K.expand(1, c, 3, 3),
                            source_K=self.K.expand(1, c, 3, 3), image_size=self.image_size, text=self.text)
                x0, _, _ = rollout_chunk(self.network, cond, self.sigmas, self.cache, self.noise, latents,
                                         previous=self._uncommitted, defer_cache_pass=self.fuse_cache_pass)
                out = self.codec_stream.decode_chunk(x0)[0].float().clamp_(-1.0, 1.0)
                if out.shape[0] != n:
                    raise RuntimeError(f"codec {type(self.codec).__name__} decoded {out.shape[0]} frames for a "
                                       f"chunk of {n}: its stream breaks its video_frames() rule")
        except BaseException:
            # A failed chunk leaves no trace: the same noise, the cache as it was (a commit made before the
            # failure, this chunk's or the fused pass's of the previous chunk, is undone), the codec's causal
            # state as it was (Wan: feature caches and frame counters), nothing staged.
            self.noise.set_state(state)
            self.cache.restore(snapshot)
            self.codec_stream.restore(coded)
            raise
        if self.fuse_cache_pass:
            self._uncommitted = (x0, cond)   # its cache pass runs inside the next chunk's first pass
        self._first_source = first
        self.latent_frames_done += c
        self.stats.frames += n
        self.stats.chunks += 1
        return out

    @staticmethod
    def to_uint8(frames: Tensor) -> np.ndarray:
        """``[3, H, W]`` or ``[T, 3, H, W]`` in [-1, 1] -> uint8 ``[H, W, 3]`` / ``[T, H, W, 3]`` (numpy)."""
        x = ((frames.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu()
        return x.movedim(-3, -1).numpy()
