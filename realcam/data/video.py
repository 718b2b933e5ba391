"""PyAV video helpers: read an mp4 into uint8 [T, H, W, 3], write uint8 frames to H.264, stack videos side by side.

torchvision.io no longer reads video, so everything here goes through PyAV (``av``).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterator, Sequence

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


def iter_video(path: str | os.PathLike, start: int = 0, stop: int | None = None, stride: int = 1,
               size: tuple[int, int] | None = None) -> Iterator[np.ndarray]:
    """Decode frames ``start:stop:stride`` one at a time -> uint8 [H, W, 3] (RGB) arrays, so a long video never
    sits in memory whole. ``size=(H, W)`` resizes while decoding (bilinear, in libswscale)."""
    if start < 0 or stride < 1 or (stop is not None and stop < start):
        raise ValueError(f"frame range start={start}, stop={stop}, stride={stride} is invalid: "
                         f"need 0 <= start <= stop and stride >= 1")
    kw = {} if size is None else {"height": int(size[0]), "width": int(size[1])}
    with _open(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for i, frame in enumerate(container.decode(stream)):
            if stop is not None and i >= stop:
                break
            if i >= start and (i - start) % stride == 0:
                yield frame.to_ndarray(format="rgb24", **kw)


def read_video(path: str | os.PathLike, start: int = 0, stop: int | None = None, stride: int = 1,
               size: tuple[int, int] | None = None) -> Tensor:
    """Decode frames ``start:stop:stride`` -> uint8 [T, H, W, 3] (RGB).

    ``size=(H, W)`` resizes while decoding (bilinear, in libswscale), which is much cheaper than decoding at
    full resolution first. Raises if the range selects no frame. :func:`iter_video` decodes lazily.
    """
    frames = list(iter_video(path, start, stop, stride, size))
    if not frames:
        raise ValueError(f"{path}: frame range start={start}, stop={stop}, stride={stride} selects no frame "
                         f"(the video has fewer frames than start)")
    return torch.from_numpy(np.stack(frames))


def count_video_frames(path: str | os.PathLike) -> int:
    """The number of frames of the first video stream: the container's count, or (when it does not say) the
    number of video packets, read without decoding."""
    with _open(path) as container:
        stream = container.streams.video[0]
        if stream.frames:
            return int(stream.frames)
        return sum(1 for packet in container.demux(stream) if packet.size)


class VideoWriter:
    """Write uint8 RGB frames to an H.264 mp4 as they come, in constant memory.

    ``write(frames)`` takes [H, W, 3] or [n, H, W, 3]; the size is fixed by the first frame. The file is written
    under a temporary name and renamed by :meth:`close`, so a killed run never leaves a truncated mp4 behind;
    :meth:`abort` (or an exception inside a ``with`` block) removes it. yuv420p when H and W are even (plays
    everywhere), else yuv444p, which 4:2:0 cannot represent. ``crf=0`` is lossless in luma only.

    ``reproducible=True`` (the default) makes the bytes a function of the frames alone: libx264's macroblock-tree
    rate control gives a different file on about half of repeated encodes of the same frames (even with one
    thread), so it is turned off, at the cost of files about a third larger at the same crf. Pass ``False`` for
    the smaller files when byte-identical reruns do not matter.
    """

    def __init__(self, path: str | os.PathLike, fps: float, crf: int = 18, codec: str = "libx264",
                 reproducible: bool = True):
        if not fps > 0:
            raise ValueError(f"fps={fps} must be > 0")
        self.path, self.fps, self.crf, self.codec = Path(path), fps, crf, codec
        self.reproducible = reproducible
        self.tmp = self.path.with_name(f".{self.path.name}.partial")
        self.frames_written = 0
        self._container = self._stream = None
        self._hw: tuple[int, int] | None = None

    def write(self, frames: Tensor | np.ndarray) -> None:
        x = frames.numpy() if torch.is_tensor(frames) else np.asarray(frames)
        x = x[None] if x.ndim == 3 else x
        if x.dtype != np.uint8:
            raise TypeError(f"frames has dtype {x.dtype}: expected uint8 [T, H, W, 3] (use (x * 255).round())")
        if x.ndim != 4 or x.shape[-1] != 3:
            raise ValueError(f"frames has shape {x.shape}: expected [T, H, W, 3] or [H, W, 3]")
        if len(x) == 0:
            return
        if self._container is None:
            self._start(x.shape[1], x.shape[2])
        elif x.shape[1:3] != self._hw:
            raise ValueError(f"frames are {x.shape[1]}x{x.shape[2]} but {self.path} was started at "
                             f"{self._hw[0]}x{self._hw[1]}: every frame of a video needs the same size")
        for frame in x:
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
            vf.pts, vf.time_base = self.frames_written, self._time_base          # frame i at i / fps
            for packet in self._stream.encode(vf):
                self._container.mux(packet)
            self.frames_written += 1

    def _start(self, H: int, W: int) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._container = av.open(str(self.tmp), mode="w", format="mp4")
        rate = Fraction(self.fps).limit_denominator(1001)
        self._stream = self._container.add_stream(self.codec, rate=rate)
        self._time_base = 1 / rate
        self._stream.width, self._stream.height = W, H
        self._stream.pix_fmt = "yuv420p" if H % 2 == 0 and W % 2 == 0 else "yuv444p"
        options = {"crf": str(int(self.crf))}
        if self.reproducible and self.codec == "libx264":
            options["x264-params"] = "mbtree=0"
        self._stream.options = options
        self._hw = (H, W)

    def close(self) -> Path:
        """Flush the encoder and move the finished file into place; returns its path."""
        if self._container is None:
            raise ValueError(f"{self.path}: no frame was written (an mp4 needs at least one)")
        try:
            for packet in self._stream.encode():                    # the encoder's delayed frames
                self._container.mux(packet)
            self._container.close()
            self._container = None
            os.replace(self.tmp, self.path)
        finally:
            self.abort()
        return self.path

    def abort(self) -> None:
        """Stop without a file: the temporary one is removed (a no-op after :meth:`close`)."""
        if self._container is not None:
            try:
                self._container.close()
            except Exception:       # an encoder in a bad state: the file goes anyway
                pass
            self._container = None
        self.tmp.unlink(missing_ok=True)

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def write_video(path: str | os.PathLike, frames: Tensor | np.ndarray, fps: float, crf: int = 18,
                codec: str = "libx264", reproducible: bool = True) -> Path:
    """Encode uint8 [T, H, W, 3] RGB frames to an H.264 mp4 and return the path (see :class:`VideoWriter`)."""
    x = frames.numpy() if torch.is_tensor(frames) else np.asarray(frames)
    if x.ndim != 4 or x.shape[0] < 1:
        raise ValueError(f"frames has shape {x.shape}: expected [T, H, W, 3] with T >= 1")
    with VideoWriter(path, fps, crf, codec, reproducible) as writer:
        writer.write(x)
    return writer.path


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
