"""The ``multicam_folder`` source: MultiCamVideo / SynCamVideo scene folders as MultiviewClips.

Layout (ReCamMaster's MultiCamVideo-Dataset; ``root`` may be any ancestor of the scene folders)::

    root/[f18_aperture10/]scene1/videos/cam01.mp4 ... cam10.mp4
    root/[f18_aperture10/]scene1/cameras/camera_extrinsics.json   # {"frame0": {"cam01": "[..] [..] [..] [..] "}}

Poses come from :func:`realcam.geometry.load_multicam_json` (Unreal -> OpenCV c2w, metres, in the dataset's
world whose y axis points down). The JSON has no intrinsics. MultiCamVideo renders every camera with a
23.76 mm wide sensor and a focal length named in the parent folder (``f18_aperture10`` = 18 mm, per the
dataset authors), so ``fx = fy = focal_length_mm / sensor_width_mm * W`` (Unreal keeps the filmback's
horizontal field of view and square pixels). Pass ``focal_length_mm`` or ``fov_deg`` when the folder
name does not carry it.
"""
from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Sequence

import torch

from realcam import geometry
from realcam.data.clip import MultiviewClip
from realcam.data.video import probe_video, read_video
from realcam.registry import MULTIVIEW_SOURCES

CAMERA_JSON = Path("cameras") / "camera_extrinsics.json"
_FOCAL_DIR = re.compile(r"(?:^|_)f(\d+(?:\.\d+)?)(?:_|$)")


def find_scenes(root: str | Path) -> list[Path]:
    """Scene folders under ``root`` (or ``root`` itself) holding ``videos/`` and the camera JSON, naturally sorted."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"multicam_folder root {root} is not a directory")
    found = {p.parent for p in root.glob("**/videos") if (p.parent / CAMERA_JSON).is_file()}
    return sorted(found, key=lambda p: _natural_key(p.relative_to(root).as_posix()))


def focal_from_path(path: Path) -> float | None:
    """Focal length in mm from a folder name like ``f18_aperture10`` on the path (nearest first), else None."""
    for part in reversed(path.parts):
        m = _FOCAL_DIR.search(part)
        if m:
            return float(m.group(1))
    return None


@MULTIVIEW_SOURCES.register("multicam_folder")
class MulticamFolderSource:
    """Indexable scenes: ``source.clip(i)`` -> MultiviewClip [K, T, H, W, 3] with poses and intrinsics.

    num_frames / frame_stride / start pick frames ``start, start + stride, ...`` (None: all that have both a
    picture in every video and a pose). height / width resize while decoding (one given: keep the aspect).
    cameras: names to load (default: every ``cam*.mp4`` that also has poses). fps: override the video's.
    """

    renders_novel_views = False

    def __init__(self, root: str | Path, num_frames: int | None = None, frame_stride: int = 1, start: int = 0,
                 height: int | None = None, width: int | None = None, cameras: Sequence[str] | None = None,
                 focal_length_mm: float | None = None, sensor_width_mm: float = 23.76, fov_deg: float | None = None,
                 fps: float | None = None):
        self.root = Path(root)
        self.scenes = find_scenes(self.root)
        if not self.scenes:
            raise FileNotFoundError(f"multicam_folder: no scene under {self.root} has videos/ and {CAMERA_JSON}; "
                                    f"expected root/scene*/videos/cam01.mp4 and root/scene*/{CAMERA_JSON}")
        if focal_length_mm is not None and fov_deg is not None:
            raise ValueError("multicam_folder: pass focal_length_mm or fov_deg, not both")
        for name, v in (("focal_length_mm", focal_length_mm), ("sensor_width_mm", sensor_width_mm),
                        ("fov_deg", fov_deg), ("fps", fps)):
            if v is not None and not (math.isfinite(v) and v > 0):
                raise ValueError(f"multicam_folder: {name}={v} must be a positive number")
        if fov_deg is not None and fov_deg >= 180:
            raise ValueError(f"multicam_folder: fov_deg={fov_deg} must be below 180 (horizontal field of view)")
        if num_frames is not None and num_frames < 1 or frame_stride < 1 or start < 0:
            raise ValueError(f"multicam_folder: num_frames={num_frames}, frame_stride={frame_stride}, start={start}: "
                             f"need num_frames >= 1 (or None), frame_stride >= 1, start >= 0")
        self.num_frames, self.frame_stride, self.start = num_frames, int(frame_stride), int(start)
        self.height, self.width, self.cameras = height, width, list(cameras) if cameras else None
        self.focal_length_mm, self.sensor_width_mm, self.fov_deg, self.fps = focal_length_mm, sensor_width_mm, fov_deg, fps

    def __len__(self) -> int:
        return len(self.scenes)

    def scene_id(self, index: int) -> str:
        return self.scenes[index].relative_to(self.root).as_posix() if self.scenes[index] != self.root else self.root.name

    def clip(self, index: int) -> MultiviewClip:
        if not -len(self) <= index < len(self):
            raise IndexError(f"multicam_folder: index {index} out of range for {len(self)} scenes under {self.root}")
        scene = self.scenes[index]
        poses = geometry.load_multicam_json(scene / CAMERA_JSON)
        names = self._camera_names(scene, poses)
        stop = None if self.num_frames is None else self.start + (self.num_frames - 1) * self.frame_stride + 1
        info = probe_video(scene / "videos" / f"{names[0]}.mp4")
        size = self._output_size(info.height, info.width)
        videos = [read_video(scene / "videos" / f"{n}.mp4", self.start, stop, self.frame_stride, size) for n in names]
        n_json = len(next(iter(poses.values())))
        pose_idx = torch.arange(self.start, n_json, self.frame_stride)
        T = min(min(len(v) for v in videos), len(pose_idx))
        if self.num_frames is not None and T < self.num_frames:
            raise ValueError(f"multicam_folder: {scene} has only {T} frames from start={self.start} at "
                             f"stride={self.frame_stride}, fewer than num_frames={self.num_frames}; lower num_frames")
        frames = torch.stack([v[:T] for v in videos])
        c2w = torch.stack([poses[n][pose_idx[:T]] for n in names])
        K = geometry.resize_intrinsics(self._native_K(scene, info.height, info.width), (info.height, info.width),
                                       tuple(frames.shape[2:4]))
        fps = self.fps or (info.fps if info.fps > 0 else 30.0)
        if self.frame_stride > 1:
            fps = fps / self.frame_stride
        meta = {"source": "multicam_folder", "root": str(self.root), "scene_dir": str(scene), "camera_names": names,
                "frame_indices": pose_idx[:T].tolist(), "native_size": [info.height, info.width]}
        return MultiviewClip(frames, c2w, K.expand(len(names), T, 3, 3).contiguous(), fps, self.scene_id(index), meta)

    __getitem__ = clip

    # -- helpers -----------------------------------------------------------------------------------------
    def _camera_names(self, scene: Path, poses: dict) -> list[str]:
        videos = {p.stem for p in (scene / "videos").glob("*.mp4")}
        if self.cameras is not None:
            missing = [n for n in self.cameras if n not in videos or n not in poses]
            if missing:
                raise ValueError(f"multicam_folder: cameras {missing} lack a video in {scene / 'videos'} or poses in "
                                 f"{scene / CAMERA_JSON}; available: {sorted(videos & set(poses))}")
            return list(self.cameras)
        names = sorted(videos & set(poses), key=_natural_key)
        if not names:
            raise ValueError(f"multicam_folder: no video in {scene / 'videos'} matches a camera in {scene / CAMERA_JSON} "
                             f"(videos: {sorted(videos)}, cameras: {sorted(poses)})")
        return names

    def _output_size(self, h0: int, w0: int) -> tuple[int, int] | None:
        if self.height is None and self.width is None:
            return None
        h = self.height or max(1, round(self.width * h0 / w0))
        w = self.width or max(1, round(self.height * w0 / h0))
        return int(h), int(w)

    def _native_K(self, scene: Path, h0: int, w0: int) -> torch.Tensor:
        if self.fov_deg is not None:
            return geometry.fov_intrinsics(h0, w0, self.fov_deg)
        focal = self.focal_length_mm or focal_from_path(scene.relative_to(self.root.parent))
        if focal is None:
            raise ValueError(f"multicam_folder: no focal length for {scene}: its folders carry no 'f<mm>_' name; "
                             f"pass focal_length_mm=... (MultiCamVideo uses 18, 24, 35 or 50) or fov_deg=...")
        f = focal / self.sensor_width_mm * w0                     # square pixels, horizontal FOV from the filmback
        return geometry.make_intrinsics(f, f, w0 / 2, h0 / 2)


def _natural_key(s: str) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", s)]
