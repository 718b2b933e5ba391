"""PyAV video helpers: read an mp4 into uint8 [T, H, W, 3], write uint8 frames to H.264, stack videos side by side.

torchvision.io no longer reads video, so everything here goes through PyAV (``av``).
"""
from __future__ import annotations

import io
import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Iterator, Sequence

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
            _encode_frame(self._container, self._stream, frame, self.frames_written, self._time_base)
            self.frames_written += 1

    def _start(self, H: int, W: int) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._container = av.open(str(self.tmp), mode="w", format="mp4")
        pix_fmt = "yuv420p" if H % 2 == 0 and W % 2 == 0 else "yuv444p"
        self._stream, self._time_base = _add_video_stream(self._container, self.codec, self.fps, H, W, pix_fmt,
                                                          {"crf": str(int(self.crf))}, self.reproducible)
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


def _add_video_stream(container: Any, codec: str, fps: float, H: int, W: int, pix_fmt: str,
                      options: dict[str, str], reproducible: bool) -> tuple[Any, Fraction]:
    """An encoder stream on ``container`` and its time base (frame i has pts i, at i / fps)."""
    rate = Fraction(fps).limit_denominator(1001)
    stream = container.add_stream(codec, rate=rate)
    stream.width, stream.height, stream.pix_fmt = W, H, pix_fmt
    options = dict(options)
    if reproducible and codec.startswith("libx264"):
        options["x264-params"] = "mbtree=0"   # mb-tree made repeated encodes of the same frames differ
    stream.options = options
    return stream, 1 / rate


def _encode_frame(container: Any, stream: Any, frame: np.ndarray | None, index: int, time_base: Fraction) -> None:
    """Encode one uint8 [H, W, 3] frame (None flushes the encoder) and mux what comes out."""
    vf = None
    if frame is not None:
        vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
        vf.pts, vf.time_base = index, time_base
    for packet in stream.encode(vf):
        container.mux(packet)


def encode_video_bytes(frames: Tensor | np.ndarray, crf: int = 10, fps: float = 8.0, threads: int = 4) -> bytes:
    """uint8 [T, H, W, 3] RGB -> the bytes of an mp4, in memory (how ``--frame-format mp4`` shards store frames).

    ``crf=0`` is lossless: libx264rgb at qp 0 codes RGB itself, and :func:`decode_video_bytes` gives the frames
    back bit for bit. ``crf > 0`` is H.264 4:4:4 (no chroma subsampling), lossy: higher is smaller and blurrier.
    The bytes depend on the frames and the arguments only (no mb-tree, a fixed thread count), so shards are
    byte-reproducible on any machine.
    """
    x = frames.numpy() if torch.is_tensor(frames) else np.asarray(frames)
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[-1] != 3 or len(x) == 0:
        raise ValueError(f"frames is {x.dtype} {x.shape}: expected uint8 [T, H, W, 3] with T >= 1")
    if not 0 <= int(crf) <= 51:
        raise ValueError(f"crf={crf}: expected 0 (lossless) to 51")
    T, H, W, _ = x.shape
    if crf == 0:
        codec, pix_fmt, options = "libx264rgb", "rgb24", {"qp": "0"}
    else:
        codec, pix_fmt, options = "libx264", "yuv444p", {"crf": str(int(crf))}
    buf = io.BytesIO()
    with av.open(buf, mode="w", format="mp4") as container:
        stream, time_base = _add_video_stream(container, codec, fps, H, W, pix_fmt,
                                              {**options, "threads": str(int(threads))}, reproducible=True)
        for i, frame in enumerate(x):
            _encode_frame(container, stream, frame, i, time_base)
        _encode_frame(container, stream, None, T, time_base)
    return buf.getvalue()


def decode_video_bytes(data: bytes) -> np.ndarray:
    """The bytes of a video file -> uint8 [T, H, W, 3] RGB; ValueError if they are not a decodable video."""
    try:
        with av.open(io.BytesIO(data)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
    except (av.error.FFmpegError, IndexError) as err:
        raise ValueError(f"not a decodable video ({type(err).__name__}: {err})") from None
    if not frames:
        raise ValueError("the video holds no frame")
    return np.stack(frames)


def _open(path: str | os.PathLike):
    if not Path(path).is_file():
        raise FileNotFoundError(f"video {path} does not exist")
    try:
        return av.open(str(path))
    except av.error.FFmpegError as e:
        raise ValueError(f"video {path} cannot be opened by PyAV ({e}); is it a complete mp4?") from e
