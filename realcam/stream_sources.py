"""Stream sources: the frames and cameras a stream is fed from, at the model's size (library code used by
``realcam stream`` and ``realcam demo``, and by anyone streaming from Python).

:class:`SourceClip` is a source ready to push: a video file (:func:`open_video`, decoded one frame at a time)
or a held-out synthetic scene that renders its own ground truth (:func:`open_synthetic`);
:func:`target_trajectory` turns a builder spec or a trajectory file into target poses for it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor

from realcam import geometry

# The synthetic source arguments the tiny models were trained with (scripts/teacher_tiny.sh).
TRAINING_SOURCE_ARGS = {"rig_mode": "offset", "novel_spread_deg": 25.0, "texture_scale": 2.0}


# ================================================================================================ sources
@dataclass
class SourceClip:
    """Source frames at the model's size, ready to push.

    frames: uint8 [T, H, W, 3], or a :class:`VideoFrames` that decodes them one at a time (a video file); K [3, 3]
    pixels of those frames; fps: their effective rate; indices: each frame's index in the original video
    (trajectory files are indexed by it); c2w [T, 4, 4] world source cameras and
    ``render(target_c2w [T, 4, 4]) -> uint8 [T, H, W, 3]`` ground truth when the source is synthetic;
    target_K [3, 3] the target camera's intrinsics (default K).
    """

    frames: Tensor | VideoFrames
    K: Tensor
    fps: float
    indices: list[int]
    c2w: Tensor | None = None
    render: Callable[[Tensor], Tensor] | None = None
    info: dict[str, Any] = field(default_factory=dict)
    target_K: Tensor | None = None


def fit_frames(frames: Tensor, K: Tensor, size: tuple[int, int]) -> tuple[Tensor, Tensor]:
    """uint8 [T, H, W, 3] + K [3, 3] -> uint8 [T, h, w, 3] + K: resize to cover ``size`` (aspect kept), centre crop."""
    from realcam.data.stream import resize_crop

    x, K = resize_crop(frames, K.expand(len(frames), 3, 3), size, zoom=1.0, top_frac=0.5, left_frac=0.5)
    return x.permute(0, 2, 3, 1).contiguous(), K[0]


@dataclass
class VideoFrames:
    """The frames ``start, start + stride, ...`` (``count`` of them) of a video file, decoded at ``decode_hw``
    and fitted to ``size`` one at a time as they are iterated: a long video never sits in memory whole."""

    path: str
    start: int
    stride: int
    count: int
    decode_hw: tuple[int, int]
    size: tuple[int, int]
    K_decoded: Tensor

    def __len__(self) -> int:
        return self.count

    def __iter__(self):
        from realcam.data.video import iter_video

        stop = self.start + (self.count - 1) * self.stride + 1
        for frame in iter_video(self.path, self.start, stop, self.stride, self.decode_hw):
            yield fit_frames(torch.from_numpy(frame)[None], self.K_decoded, self.size)[0][0]


def open_video(path: str | Path, size: tuple[int, int], fov_deg: float, fps: float | None, stride: int | None,
               start: int = 0, max_frames: int | None = None) -> SourceClip:
    """Every ``stride``-th frame of ``path`` (default: the stride closest to ``fps``) from ``start``, resized and
    centre-cropped to ``size`` as it is decoded (:class:`VideoFrames`)."""
    from realcam.data.stream import resize_crop_geometry
    from realcam.data.video import count_video_frames, probe_video

    info = probe_video(path)
    if stride is None:
        stride = max(1, round(info.fps / fps)) if fps and info.fps else 1
    if stride < 1 or start < 0:
        raise ValueError(f"--stride {stride} must be >= 1 and --start {start} >= 0")
    total = count_video_frames(path)
    if start >= total:
        raise ValueError(f"--start {start} is past the end of {path} ({total} frames): lower --start")
    count = (total - start + stride - 1) // stride
    count = count if max_frames is None else min(count, max_frames)
    # decode at twice the model size (libswscale), then resize_crop antialiases down: cheap and K stays exact
    scale = min(1.0, 2 * max(size[0] / info.height, size[1] / info.width))
    decode_hw = (max(size[0], round(info.height * scale)), max(size[1], round(info.width * scale)))
    K_decoded = geometry.resize_intrinsics(geometry.fov_intrinsics(info.height, info.width, fov_deg),
                                           (info.height, info.width), decode_hw)
    K = resize_crop_geometry(decode_hw, K_decoded, size, zoom=1.0, top_frac=0.5, left_frac=0.5)[2]
    frames = VideoFrames(str(path), start, stride, count, decode_hw, tuple(size), K_decoded)
    indices = [start + k * stride for k in range(count)]
    return SourceClip(frames, K, info.fps / stride, indices,
                      info={"kind": "video", "path": str(path), "video_fps": info.fps, "stride": stride,
                            "start": start, "video_size": [info.height, info.width], "fov_deg": fov_deg})


def parse_source_spec(spec: str) -> dict[str, Any]:
    """``synthetic:seed=3,index=0,split=test`` -> {'seed': 3, 'index': 0, 'split': 'test'}."""
    kind, _, rest = spec.partition(":")
    if kind != "synthetic":
        raise ValueError(f"--source {spec!r}: only 'synthetic:seed=N[,index=I][,split=S]' is a built-in source; "
                         f"use --video PATH for footage")
    out: dict[str, Any] = {"seed": 0, "index": 0, "split": "test"}
    for item in filter(None, rest.split(",")):
        key, eq, value = item.partition("=")
        if not eq or key not in out:
            raise ValueError(f"--source {spec!r}: {item!r} is not one of seed=N, index=I, split=S")
        if key == "split":
            out[key] = value
            continue
        try:
            out[key] = int(value)
        except ValueError:
            raise ValueError(f"--source {spec!r}: {key}={value!r} is not an integer; write {key}=3") from None
        if out[key] < 0:
            raise ValueError(f"--source {spec!r}: {key}={value} is negative; {key} counts from 0")
    return out


def open_synthetic(spec: str, size: tuple[int, int], fps: float, frames: int,
                   source_args: dict[str, Any] | None = None) -> SourceClip:
    """One camera of a held-out synthetic scene (split ``test`` by default); the scene renders ground truth."""
    from realcam.data.synthetic import SyntheticSource

    opts = parse_source_spec(spec)
    args = {**TRAINING_SOURCE_ARGS, **(source_args or {})}
    src = SyntheticSource(num_cameras=1, num_frames=frames, height=size[0], width=size[1], fps=fps,
                          seed=opts["seed"], split=opts["split"], **args)
    clip, scene = src.clip(opts["index"]), src.scene(opts["index"])
    times = torch.arange(frames, dtype=torch.float64) / fps
    K = clip.K[0, 0]

    def render(target_c2w: Tensor) -> Tensor:
        n = len(target_c2w)
        return scene.render(target_c2w.float(), K.expand(n, 3, 3), times[:n], size[0], size[1])

    return SourceClip(clip.frames[0], K, fps, list(range(frames)), c2w=clip.c2w[0], render=render,
                      info={"kind": "synthetic", "scene_id": clip.scene_id, **opts, "source_args": args})


# ================================================================================================ trajectories
def target_trajectory(spec: str, clip: SourceClip, camera: str | None = None) -> tuple[Tensor, dict[str, Any]]:
    """Target poses ``[T', 4, 4]`` relative to the source camera of each frame (T' <= T frames of ``clip``).

    A builder spec (``arc:left:30``, ``loop:orbit:20``, ...) gets one pose per frame. A file (realcam JSON,
    MultiCamVideo / ReCamMaster JSON with ``camera``, RealEstate10K txt) is indexed by source frame index and
    taken relative to its pose at the first streamed frame, so the target starts at the source view; the stream
    ends where the file does.
    """
    if Path(spec).is_file():
        traj = geometry.load_any_trajectory(spec, camera=camera)
        keep = [i for i in clip.indices if i < len(traj)]
        if not keep:
            raise ValueError(f"--trajectory {spec} has {len(traj)} poses but the first streamed frame is source frame "
                             f"{clip.indices[0]}: lower --start")
        c2w = traj.c2w.double()
        rel = geometry.rigid_inverse(c2w[keep[0]])[None] @ c2w[torch.tensor(keep)]
        return rel.float(), {"kind": "file", "path": str(spec), "camera": traj.metadata.get("camera", camera),
                             "poses_in_file": len(traj), "frames_used": len(keep)}
    if camera is not None:
        raise ValueError(f"--camera {camera} only applies to a MultiCamVideo/ReCamMaster JSON file, but --trajectory "
                         f"{spec!r} is not a file")
    return geometry.parse_trajectory_spec(spec, len(clip.frames)), {"kind": "spec", "spec": spec}
