"""`MultiviewClip`: one typed container for K synchronized cameras over T frames of one scene."""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor

from realcam import geometry


@dataclass
class MultiviewClip:
    """K synchronized cameras over T frames.

    frames: uint8 [K, T, H, W, 3]; c2w: float32 [K, T, 4, 4] (OpenCV camera-to-world, metres);
    K: float32 [K, T, 3, 3] (pixels, pixel centres at +0.5); fps: frames per second (> 0);
    scene_id: a stable name for the scene; metadata: JSON-serializable extras (source, seed, families, ...).
    Numpy inputs are converted to torch tensors; float poses/intrinsics are cast to float32.
    """

    frames: Tensor
    c2w: Tensor
    K: Tensor
    fps: float
    scene_id: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        frames = torch.as_tensor(np.asarray(self.frames) if not torch.is_tensor(self.frames) else self.frames)
        if frames.dtype != torch.uint8:
            raise TypeError(f"frames has dtype {frames.dtype}: expected uint8 [K, T, H, W, 3] in 0..255 "
                            f"(convert float video with (x * 255).round().to(torch.uint8))")
        if frames.ndim != 5 or frames.shape[-1] != 3:
            raise ValueError(f"frames has shape {tuple(frames.shape)}: expected [K, T, H, W, 3] "
                             f"(add a camera axis with frames[None] for a single camera)")
        n_cam, n_t = frames.shape[:2]
        if n_cam < 1 or n_t < 1 or frames.shape[2] < 1 or frames.shape[3] < 1:
            raise ValueError(f"frames has shape {tuple(frames.shape)}: K, T, H and W must all be >= 1")
        self.frames = frames.contiguous()
        for name, tail, check in (("c2w", (4, 4), geometry.validate_c2w), ("K", (3, 3), geometry.validate_intrinsics)):
            x = torch.as_tensor(getattr(self, name))
            if not x.is_floating_point():
                raise TypeError(f"{name} has dtype {x.dtype}: expected float32 [K, T, {tail[0]}, {tail[1]}]")
            if tuple(x.shape) != (n_cam, n_t, *tail):
                raise ValueError(f"{name} has shape {tuple(x.shape)}: expected [{n_cam}, {n_t}, {tail[0]}, {tail[1]}] "
                                 f"to match frames [K={n_cam}, T={n_t}, H, W, 3]")
            setattr(self, name, check(x.to(torch.float32).contiguous(), name=name))
        if not (isinstance(self.fps, (int, float)) and math.isfinite(self.fps) and self.fps > 0):
            raise ValueError(f"fps is {self.fps!r}: expected a finite frame rate > 0 (frames per second)")
        self.fps = float(self.fps)
        if not isinstance(self.scene_id, str):
            raise TypeError(f"scene_id is a {type(self.scene_id).__name__}: expected a str")
        if not isinstance(self.metadata, dict):
            raise TypeError(f"metadata is a {type(self.metadata).__name__}: expected a dict")

    # -- shape accessors --------------------------------------------------------------------------------
    @property
    def num_cameras(self) -> int:
        return int(self.frames.shape[0])

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[1])

    @property
    def image_size(self) -> tuple[int, int]:
        """(H, W) in pixels."""
        return int(self.frames.shape[2]), int(self.frames.shape[3])

    @property
    def times(self) -> Tensor:
        """Frame timestamps in seconds, [T] float64 (frame t is at t / fps)."""
        return torch.arange(self.num_frames, dtype=torch.float64) / self.fps

    # -- selection --------------------------------------------------------------------------------------
    def select(self, cameras: int | Sequence[int] | slice | None = None,
               times: int | Sequence[int] | slice | None = None) -> "MultiviewClip":
        """A sub-clip over the given camera and frame indices (ints keep their axis: K or T of 1).

        A strided frame slice scales fps accordingly, so ``clip.select(times=slice(None, None, 2))``
        is a valid half-rate clip.
        """
        cam_idx = _indices(cameras, self.num_cameras, "cameras")
        t_idx = _indices(times, self.num_frames, "times")
        fps = self.fps
        if isinstance(times, slice) and (times.step or 1) != 1:
            fps = self.fps / abs(times.step)
        meta = dict(self.metadata)
        if "camera_names" in meta:
            meta["camera_names"] = [meta["camera_names"][i] for i in cam_idx.tolist()]
        meta["frame_indices"] = [int(meta.get("frame_indices", range(self.num_frames))[i]) for i in t_idx.tolist()]
        pick = (lambda x: x[cam_idx][:, t_idx])
        return replace(self, frames=pick(self.frames), c2w=pick(self.c2w), K=pick(self.K), fps=fps, metadata=meta)

    def __repr__(self) -> str:
        K_, T, H, W = self.frames.shape[:4]
        return f"MultiviewClip(scene_id={self.scene_id!r}, cameras={K_}, frames={T}, size={H}x{W}, fps={self.fps:g})"


def _indices(sel: int | Sequence[int] | slice | None, n: int, name: str) -> Tensor:
    if sel is None:
        return torch.arange(n)
    if isinstance(sel, slice):
        return torch.arange(n)[sel]
    idx = torch.as_tensor([sel] if isinstance(sel, int) else list(sel), dtype=torch.long)
    if idx.ndim != 1 or idx.numel() == 0:
        raise ValueError(f"{name} selection {sel!r} is empty: pick at least one index")
    if (idx < -n).any() or (idx >= n).any():
        raise IndexError(f"{name} selection {idx.tolist()} is out of range for {n} {name}")
    return idx.remainder(n)
