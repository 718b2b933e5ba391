"""PyAV video helpers: read an mp4 into uint8 [T, H, W, 3], write uint8 frames to H.264, stack videos side by side.

torchvision.io no longer reads video, so everything here goes through PyAV (``av``).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Sequence

import av
import numpy as np
import torch
from torch import Tensor


@dataclass(frozen=True)
class VideoInfo:
    """What the container says about its first video stream (num_frames may be 0 when unknown)."""

    fps: float
    num_frames: int
    height: int
    width: int
    codec: str


def probe_video(path: str | os.PathLike) -> VideoInfo:
    """Stream metadata without decoding frames."""
    with _open(path) as container:
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate or 0
        return VideoInfo(fps=float(rate), num_frames=int(stream.frames or 0), height=stream.height,
                         width=stream.width, codec=stream.codec_context.name)


def read_video(path: str | os.PathLike, start: int = 0, stop: int | None = None, stride: int = 1,
               size: tuple[int, int] | None = None) -> Tensor:
    """Decode frames ``start:stop:stride`` -> uint8 [T, H, W, 3] (RGB).

    ``size=(H, W)`` resizes while decoding (bilinear, in libswscale), which is much cheaper than decoding at
    full resolution first. Raises if the range selects no frame.
    """
    if start < 0 or stride < 1 or (stop is not None and stop < start):
        raise ValueError(f"frame range start={start}, stop={stop}, stride={stride} is invalid: "
                         f"need 0 <= start <= stop and stride >= 1")
    kw = {} if size is None else {"height": int(size[0]), "width": int(size[1])}
    frames: list[np.ndarray] = []
    with _open(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for i, frame in enumerate(container.decode(stream)):
            if stop is not None and i >= stop:
                break
            if i >= start and (i - start) % stride == 0:
                frames.append(frame.to_ndarray(format="rgb24", **kw))
    if not frames:
        raise ValueError(f"{path}: frame range start={start}, stop={stop}, stride={stride} selects no frame "
                         f"(the video has fewer frames than start)")
    return torch.from_numpy(np.stack(frames))


def write_video(path: str | os.PathLike, frames: Tensor | np.ndarray, fps: float, crf: int = 18,
                codec: str = "libx264") -> Path:
    """Encode uint8 [T, H, W, 3] RGB frames to an H.264 mp4 and return the path.

    yuv420p is used when H and W are even (plays everywhere); odd sizes fall back to yuv444p, which 4:2:0
    cannot represent. The file is written under a temporary name and renamed when complete, so a killed
    run never leaves a truncated mp4 behind. ``crf=0`` is lossless in luma but chroma is still subsampled.
    """
    x = frames.numpy() if torch.is_tensor(frames) else np.asarray(frames)
    if x.dtype != np.uint8:
        raise TypeError(f"frames has dtype {x.dtype}: expected uint8 [T, H, W, 3] (use (x * 255).round())")
    if x.ndim != 4 or x.shape[-1] != 3 or x.shape[0] < 1:
        raise ValueError(f"frames has shape {x.shape}: expected [T, H, W, 3] with T >= 1")
    if not fps > 0:
        raise ValueError(f"fps={fps} must be > 0")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.partial")
    T, H, W, _ = x.shape
    pix_fmt = "yuv420p" if H % 2 == 0 and W % 2 == 0 else "yuv444p"
    try:
        with av.open(str(tmp), mode="w", format="mp4") as container:
            stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
            stream.width, stream.height, stream.pix_fmt = W, H, pix_fmt
            stream.options = {"crf": str(int(crf))}
            for frame in x:
                for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
                    container.mux(packet)
            for packet in stream.encode():                       # flush the encoder's delayed frames
                container.mux(packet)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def side_by_side(videos: Sequence[Tensor | np.ndarray], gap: int = 2, gap_value: int = 255) -> Tensor:
    """Concatenate uint8 videos [T, H, W_i, 3] along width with a ``gap``-pixel separator -> [T, H, sum W + gaps, 3].

    A single frame [H, W, 3] is treated as a one-frame video and repeated to the common T.
    """
    if not videos:
        raise ValueError("videos is empty: pass at least one [T, H, W, 3] uint8 video")
    vids = [torch.as_tensor(np.asarray(v) if not torch.is_tensor(v) else v) for v in videos]
    vids = [v[None] if v.ndim == 3 else v for v in vids]
    for i, v in enumerate(vids):
        if v.dtype != torch.uint8 or v.ndim != 4 or v.shape[-1] != 3:
            raise ValueError(f"videos[{i}] is {v.dtype} {tuple(v.shape)}: expected uint8 [T, H, W, 3]")
    T, H = max(v.shape[0] for v in vids), vids[0].shape[1]
    for i, v in enumerate(vids):
        if v.shape[1] != H or v.shape[0] not in (1, T):
            raise ValueError(f"videos[{i}] has shape {tuple(v.shape)}: every video needs H={H} and T={T} (or T=1); "
                             f"resize or trim them first")
    parts: list[Tensor] = []
    for i, v in enumerate(vids):
        if i and gap > 0:
            parts.append(torch.full((T, H, gap, 3), gap_value, dtype=torch.uint8))
        parts.append(v.expand(T, *v.shape[1:]))
    return torch.cat(parts, dim=2)


def _open(path: str | os.PathLike):
    if not Path(path).is_file():
        raise FileNotFoundError(f"video {path} does not exist")
    try:
        return av.open(str(path))
    except av.error.FFmpegError as e:
        raise ValueError(f"video {path} cannot be opened by PyAV ({e}); is it a complete mp4?") from e
