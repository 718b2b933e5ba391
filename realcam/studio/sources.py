"""Where a studio session's source frames come from: the synthetic scene, an uploaded video, or the webcam.

A feed hands the worker one source frame at a time as uint8 ``[H, W, 3]`` at the model size, with its
intrinsics ``K [3, 3]``; the synthetic feed also gives the world source camera and renders the ground truth of
any target camera. Feeds loop forever: the synthetic clip and the video play forward and back (no jump in the
scene), the webcam gives the newest frame the page sent.
"""
from __future__ import annotations

import io
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import Tensor

from realcam import geometry
from realcam.stream_sources import TRAINING_SOURCE_ARGS, fit_frames, open_video

SYNTHETIC_FRAMES = 64          # rendered once per seed, then played forward and back


@dataclass
class SourceFrame:
    """One source frame: uint8 [H, W, 3], the world source camera [4, 4] (or None: unknown) and, for the synthetic
    source, ``render(target_c2w [4, 4], target_K [3, 3]) -> uint8 [H, W, 3]`` (its ground truth)."""

    image: Tensor
    index: int
    c2w: Tensor | None = None
    render: Callable[[Tensor, Tensor], Tensor] | None = None


def _pingpong(i: int, n: int) -> int:
    if n == 1:
        return 0
    period = 2 * (n - 1)
    k = i % period
    return k if k < n else period - k


class SyntheticFeed:
    """A held-out synthetic scene (split ``test``, the training source arguments), rendered at the model size."""

    kind = "synthetic"

    def __init__(self, size: tuple[int, int], fps: float, seed: int = 0, frames: int = SYNTHETIC_FRAMES):
        from realcam.data.synthetic import SyntheticSource

        src = SyntheticSource(num_cameras=1, num_frames=frames, height=size[0], width=size[1], fps=fps, seed=seed,
                              split="test", **TRAINING_SOURCE_ARGS)
        clip = src.clip(0)
        self.scene, self.size, self.fps, self.seed = src.scene(0), size, fps, seed
        self.frames, self.c2w, self.K = clip.frames[0], clip.c2w[0], clip.K[0, 0]
        self.i = 0

    def info(self) -> dict:
        return {"kind": self.kind, "seed": self.seed, "frames": len(self.frames), "ground_truth": True}

    def restart(self) -> None:
        self.i = 0

    def next(self) -> SourceFrame:
        k = _pingpong(self.i, len(self.frames))
        self.i += 1
        t = torch.tensor([k / self.fps], dtype=torch.float64)

        def render(target_c2w: Tensor, target_K: Tensor) -> Tensor:
            out = self.scene.render(target_c2w.float()[None], target_K.float()[None], t, *self.size)
            return out[0]

        return SourceFrame(self.frames[k], k, self.c2w[k], render)


class VideoFeed:
    """An uploaded video, decoded with PyAV one frame at a time and fitted to the model size."""

    kind = "upload"

    def __init__(self, path: str | Path, size: tuple[int, int], fps: float, fov_deg: float, max_frames: int = 3000):
        self.clip = open_video(path, size, fov_deg, fps, None, 0, max_frames)
        self.K = self.clip.K
        self.frames = [f for f, _ in zip(self.clip.frames, range(max_frames))]   # model-size uint8: small
        if not self.frames:
            raise ValueError("the video holds no frame PyAV can decode")
        self.i = 0

    def info(self) -> dict:
        return {"kind": self.kind, "frames": len(self.frames), "fps": self.clip.fps,
                "stride": self.clip.info["stride"], "ground_truth": False}

    def restart(self) -> None:
        self.i = 0

    def next(self) -> SourceFrame:
        k = _pingpong(self.i, len(self.frames))
        self.i += 1
        return SourceFrame(self.frames[k], k)


def open_upload(path: str | Path, size: tuple[int, int], fps: float, fov_deg: float) -> VideoFeed:
    """A :class:`VideoFeed` of an uploaded file, or ValueError saying it is not a video PyAV decodes."""
    import av

    try:
        return VideoFeed(path, size, fps, fov_deg)
    except (av.error.FFmpegError, ValueError, IndexError, ZeroDivisionError, OverflowError) as err:
        # realcam.data.video's own errors name the server's temporary path: say it in the user's terms
        raise ValueError(f"the upload is not a video PyAV can decode ({type(err).__name__}): send an mp4, webm or "
                         f"mov file") from None


class WebcamFeed:
    """The newest frame the page sent (JPEG/PNG/WebP bytes from ``getUserMedia``), decoded and fitted on use."""

    kind = "webcam"

    def __init__(self, size: tuple[int, int], fov_deg: float):
        self.size, self.fov_deg = size, fov_deg
        self.K = geometry.fov_intrinsics(size[0], size[1], fov_deg)
        self._lock = threading.Lock()
        self._latest: bytes | None = None
        self.received = self.i = 0

    def info(self) -> dict:
        return {"kind": self.kind, "received": self.received, "ground_truth": False}

    def restart(self) -> None:
        self.i = 0

    def offer(self, data: bytes) -> None:
        """A frame from the page (event loop); an older frame not yet used is dropped."""
        with self._lock:
            self._latest = data
            self.received += 1

    def next(self) -> SourceFrame | None:
        """The newest frame, or None when none arrived since the last call. ValueError if it is not an image."""
        with self._lock:
            data, self._latest = self._latest, None
        if data is None:
            return None
        image = decode_image(data)
        K = geometry.fov_intrinsics(image.shape[0], image.shape[1], self.fov_deg)
        frame = fit_frames(torch.from_numpy(image)[None], K, self.size)[0][0]
        self.i += 1
        return SourceFrame(frame, self.i - 1)


def decode_image(data: bytes, max_pixels: int = 4096 * 4096) -> np.ndarray:
    """JPEG / PNG / WebP bytes -> uint8 [H, W, 3] RGB; ValueError naming the problem otherwise."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as img:
            if img.width * img.height > max_pixels:
                raise ValueError(f"webcam frame is {img.width}x{img.height}: send at most {max_pixels} pixels")
            return np.array(img.convert("RGB"))
    except (UnidentifiedImageError, OSError) as err:
        raise ValueError(f"webcam frame is not an image ({type(err).__name__}): send JPEG, PNG or WebP bytes") from None
