"""Camera-path files: the :class:`Trajectory` container, and importers / exporters that convert every external
convention here, at the edge.

One converter per format, each with its inverse (round-trip tested):

- MultiCamVideo / SynCamVideo Unreal JSON  (:func:`load_multicam_json`, :func:`save_multicam_json`)
- RealEstate10K txt                        (:func:`load_realestate10k`, :func:`save_realestate10k`)
- nerfstudio / OpenGL ``transforms.json``  (:func:`load_nerfstudio`, :func:`save_nerfstudio`)
- realcam trajectory JSON                  (:func:`load_trajectory`, :func:`save_trajectory`)

and :func:`load_any_trajectory`, which picks the right one from the file's content. Importers validate every
pose at the edge; errors name the file, the frame and (for MultiCamVideo) the camera.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import Tensor

from realcam.poses import _c2w_problem, _K_problem, homogeneous, make_intrinsics, validate_c2w, validate_intrinsics

REALCAM_FORMAT = "realcam-trajectory"
REALCAM_VERSION = 1
REALCAM_CONVENTION = "opencv-c2w-metres"


# ------------------------------------------------------------------------------------ Trajectory
@dataclass
class Trajectory:
    """A camera path in realcam's convention.

    c2w ``[T, 4, 4]`` OpenCV camera-to-world (metres); K ``[T, 3, 3]`` pixels of ``image_size`` (a ``[3, 3]``
    K is broadcast) or None; image_size (H, W) or None; fps or None; timestamps ``[T]`` seconds or None;
    metadata: format-specific extras (e.g. ``url``, ``K_normalized``, ``file_paths``).
    """

    c2w: Tensor
    K: Tensor | None = None
    image_size: tuple[int, int] | None = None
    fps: float | None = None
    timestamps: Tensor | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.c2w = validate_c2w(self.c2w, name="Trajectory.c2w")
        if self.c2w.ndim != 3:
            raise ValueError(f"Trajectory.c2w has shape {tuple(self.c2w.shape)}: expected [T, 4, 4]")
        T = len(self.c2w)
        if self.K is not None:
            K = validate_intrinsics(self.K, name="Trajectory.K")
            if K.ndim == 2:
                K = K.expand(T, 3, 3).clone()
            if K.shape != (T, 3, 3):
                raise ValueError(f"Trajectory.K has shape {tuple(K.shape)}: expected [3, 3] or [{T}, 3, 3]")
            self.K = K
        if self.image_size is not None:
            hw = tuple(int(v) for v in self.image_size)
            if len(hw) != 2 or min(hw) <= 0:
                raise ValueError(f"Trajectory.image_size={self.image_size!r}: expected (H, W) positive ints")
            self.image_size = hw
        if self.timestamps is not None:
            self.timestamps = torch.as_tensor(self.timestamps, dtype=torch.float64)
            if self.timestamps.shape != (T,):
                raise ValueError(f"Trajectory.timestamps has shape {tuple(self.timestamps.shape)}: expected [{T}]")
        if self.fps is not None and not self.fps > 0:
            raise ValueError(f"Trajectory.fps={self.fps}: expected a positive frame rate or None")

    def __len__(self) -> int:
        return len(self.c2w)


def _check_poses(c2w: Tensor, where: list[str], atol: float = 1e-3) -> None:
    """Raise naming ``where[i]`` (file, frame, camera) for the first non-rigid pose of ``c2w [N, 4, 4]``."""
    found = _c2w_problem(c2w, atol) if len(c2w) else None
    if found is not None:
        raise ValueError(f"{where[found[0]]} {found[1]}")


def _check_K(K: Tensor, where: list[str]) -> None:
    found = _K_problem(K, 1e-4) if len(K) else None
    if found is not None:
        raise ValueError(f"{where[found[0]]}: intrinsics {found[1]}")


# ------------------------------------------------------------------------------------ MultiCamVideo (Unreal)
# Unreal axes: x forward, y right, z up, left-handed, centimetres. OpenCV's axes in Unreal terms are
# x = UE y (right), y = -UE z (down), z = UE x (forward): take components [1, 2, 0] and negate the new y.
# That basis change has det -1 (it switches handedness), so it must be applied to the world (rows) as well as
# to the camera (columns). Done by indexing, not matmul, so it is exact and even keeps the sign of zeros.
_CM_PER_M = 100.0
_ROW = re.compile(r"\[([^\[\]]*)\]")


def _ue_to_cv(x: Tensor, dim: int) -> Tensor:
    """Unreal -> OpenCV components along ``dim`` (-1: columns, -2: rows)."""
    x = x.index_select(dim, torch.tensor([1, 2, 0], device=x.device))
    sign = torch.tensor([1.0, -1.0, 1.0], dtype=x.dtype, device=x.device)
    return x * (sign if dim == -1 else sign[:, None])


def _cv_to_ue(x: Tensor, dim: int) -> Tensor:
    """Inverse of :func:`_ue_to_cv`."""
    sign = torch.tensor([1.0, -1.0, 1.0], dtype=x.dtype, device=x.device)
    x = x * (sign if dim == -1 else sign[:, None])
    return x.index_select(dim, torch.tensor([2, 0, 1], device=x.device))


def unreal_to_opencv(m: Tensor) -> Tensor:
    """Unreal row-vector transforms ``[..., 4, 4]`` (cm, as written in MultiCamVideo JSON) -> OpenCV c2w (m).

    DESIGN §3's recipe (transpose; columns [1, 2, 0, 3]; negate the new y; / 100) is the column step below.
    On its own it leaves det R = -1, because the rows are still in Unreal's left-handed world; the same basis
    change on the rows makes R proper again. Relative poses are identical with or without the row step.
    """
    M = m.to(torch.float64).transpose(-1, -2)          # row-vector form -> column-vector form
    c2w = torch.zeros_like(M)
    # convention change: camera axes (columns) and world axes (rows) from Unreal to OpenCV, then cm -> m
    c2w[..., :3, :3] = _ue_to_cv(_ue_to_cv(M[..., :3, :3], -1), -2)
    c2w[..., :3, 3] = _ue_to_cv(M[..., :3, 3], -1) / _CM_PER_M
    c2w[..., 3, 3] = 1.0
    return c2w


def opencv_to_unreal(c2w: Tensor) -> Tensor:
    """Inverse of :func:`unreal_to_opencv`: OpenCV c2w (m) -> Unreal row-vector transforms (cm)."""
    c2w = c2w.to(torch.float64)
    M = torch.zeros_like(c2w)
    M[..., :3, :3] = _cv_to_ue(_cv_to_ue(c2w[..., :3, :3], -2), -1)
    M[..., :3, 3] = _cv_to_ue(c2w[..., :3, 3], -1) * _CM_PER_M
    M[..., 3, 3] = 1.0
    return M.transpose(-1, -2)


def _frame_number(key: str, path: Path) -> int:
    match = re.fullmatch(r"frame(\d+)", key)
    if match is None:
        raise ValueError(f"{path}: key {key!r} is not 'frame<N>': expected MultiCamVideo keys frame0..frameN")
    return int(match.group(1))


def _parse_unreal(text: Any, where: str) -> list[list[float]]:
    rows = _ROW.findall(text) if isinstance(text, str) else []
    try:
        m = [[float(v) for v in row.split()] for row in rows]
    except ValueError:
        m = []
    if len(m) != 4 or any(len(r) != 4 for r in m):
        raise ValueError(f"{where}: {text!r} is not 4 bracketed rows of 4 numbers, expected e.g. "
                         "'[1 0 0 0] [0 1 0 0] [0 0 1 0] [x y z 1] ' (Unreal row-vector form, cm)")
    return m


def _multicam_from_dict(data: Any, path: Path, dtype: torch.dtype) -> dict[str, Tensor]:
    if not isinstance(data, dict) or not data:
        raise ValueError(f"{path}: expected a JSON object {{'frame0': {{'cam01': '[..] [..] [..] [..]', ...}}, ...}}")
    keys = sorted(data, key=lambda k: _frame_number(k, path))
    numbers = [_frame_number(k, path) for k in keys]
    if numbers != list(range(len(keys))):
        missing = sorted(set(range(numbers[-1] + 1)) - set(numbers))
        raise ValueError(f"{path}: frames must be frame0..frame{len(keys) - 1} without gaps; missing {missing[:5]}")
    cams = sorted(data[keys[0]])
    raw: dict[str, list] = {cam: [] for cam in cams}
    for key in keys:
        if sorted(data[key]) != cams:
            raise ValueError(f"{path} {key}: cameras {sorted(data[key])} differ from frame0's {cams}; "
                             "every frame must list the same cameras")
        for cam in cams:
            raw[cam].append(_parse_unreal(data[key][cam], f"{path} {key} {cam}"))
    out = {}
    for cam in cams:
        c2w = unreal_to_opencv(torch.tensor(raw[cam], dtype=torch.float64))
        _check_poses(c2w, [f"{path} {key} {cam}" for key in keys])
        out[cam] = c2w.to(dtype)
    return out


def load_multicam_json(path: str | Path, dtype: torch.dtype = torch.float32) -> dict[str, Tensor]:
    """MultiCamVideo / SynCamVideo ``camera_extrinsics.json`` -> ``{camera: c2w [T, 4, 4]}`` OpenCV, metres.

    Poses are absolute in a right-handed world whose axes are Unreal's (y, -z, x); take them relative to a
    reference camera with :func:`realcam.geometry.relative_poses`.
    """
    path = Path(path)
    return _multicam_from_dict(json.loads(path.read_text()), path, dtype)


def _fmt_unreal(m: Tensor) -> str:
    # '%g' is C++'s default stream format (6 significant digits), which is how the dataset writes numbers
    return "".join("[" + " ".join(f"{v:g}" for v in row) + "] " for row in m.tolist())


def save_multicam_json(path: str | Path, cameras: Mapping[str, Tensor]) -> Path:
    """Write ``{camera: c2w [T, 4, 4]}`` (OpenCV, metres) as MultiCamVideo Unreal JSON (frame0..frameN)."""
    path = Path(path)
    if not cameras:
        raise ValueError("save_multicam_json got no cameras: pass {'cam01': c2w [T, 4, 4], ...}")
    lengths = {cam: len(c2w) for cam, c2w in cameras.items()}
    if len(set(lengths.values())) != 1:
        raise ValueError(f"save_multicam_json: cameras have different lengths {lengths}; all need the same T")
    ue = {}
    for cam, c2w in cameras.items():
        c2w = torch.as_tensor(c2w).detach().cpu()
        _check_poses(c2w, [f"cameras[{cam!r}][{t}]" for t in range(len(c2w))])
        ue[cam] = opencv_to_unreal(c2w)
    T = next(iter(lengths.values()))
    data = {f"frame{t}": {cam: _fmt_unreal(ue[cam][t]) for cam in sorted(ue)} for t in range(T)}
    path.write_text(json.dumps(data, indent=4))
    return path


# ------------------------------------------------------------------------------------ RealEstate10K
def _numbers(line: str) -> list[float] | None:
    try:
        return [float(v) for v in line.split()]
    except ValueError:
        return None


def load_realestate10k(path: str | Path, image_size: tuple[int, int] | None = None,
                       dtype: torch.dtype = torch.float32) -> Trajectory:
    """RealEstate10K camera txt -> :class:`Trajectory`.

    Line 1 is the video URL; each later line is ``timestamp_us fx fy cx cy 0 0`` followed by the OpenCV
    world-to-camera 3x4, row-major, with fx fy cx cy normalized by the image width / height. With
    ``image_size`` (H, W) K is in pixels; without it K is None and ``metadata['K_normalized']`` holds it.
    """
    path = Path(path)
    lines = path.read_text().splitlines()
    url = None
    if lines and (_numbers(lines[0]) is None or len(_numbers(lines[0]) or []) != 19):
        url, lines = lines[0].strip(), lines[1:]
    rows, where = [], []
    for n, line in enumerate(lines, start=2 if url is not None else 1):
        if not line.strip():
            continue
        nums = _numbers(line)
        if nums is None or len(nums) != 19:
            raise ValueError(f"{path} line {n}: expected 19 numbers (timestamp_us, fx fy cx cy, 0 0, 12 w2c), got "
                             f"{line.strip()[:80]!r}")
        rows.append(nums)
        where.append(f"{path} line {n} (frame {len(where)})")
    if not rows:
        raise ValueError(f"{path}: no camera lines found; expected a URL line then 19 numbers per frame")
    x = torch.tensor(rows, dtype=torch.float64)
    w2c = homogeneous(x[:, 7:].reshape(-1, 3, 4))
    _check_poses(w2c, [f"{w} world-to-camera" for w in where])
    # convention change: the format stores world-to-camera, realcam camera-to-world. A true inverse (not R^T):
    # the file's 9-digit rotations are orthonormal only to ~1e-7, and this keeps save(load(f)) == f.
    c2w = torch.linalg.inv(w2c)
    K_norm = make_intrinsics(x[:, 1], x[:, 2], x[:, 3], x[:, 4], dtype=torch.float64)
    _check_K(K_norm, where)
    stamps = x[:, 0] / 1e6
    diffs = stamps.diff()
    fps = float(1.0 / diffs.median()) if len(diffs) and diffs.median() > 0 else None
    metadata: dict[str, Any] = {"format": "realestate10k", "url": url, "K_normalized": K_norm.to(dtype)}
    K = None
    if image_size is not None:
        H, W = image_size
        K = make_intrinsics(x[:, 1] * W, x[:, 2] * H, x[:, 3] * W, x[:, 4] * H, dtype=dtype)
    return Trajectory(c2w.to(dtype), K=K, image_size=image_size, fps=fps, timestamps=stamps, metadata=metadata)


def save_realestate10k(path: str | Path, traj: Trajectory) -> Path:
    """Write a :class:`Trajectory` as RealEstate10K txt. Needs K with image_size, or ``metadata['K_normalized']``.

    Timestamps come from ``traj.timestamps``, else ``t / fps``, else the frame index, in microseconds.
    """
    path = Path(path)
    T = len(traj)
    if traj.K is not None and traj.image_size is not None:
        H, W = traj.image_size
        K = traj.K.to(torch.float64)
        norm = torch.stack([K[:, 0, 0] / W, K[:, 1, 1] / H, K[:, 0, 2] / W, K[:, 1, 2] / H], -1)
    elif traj.metadata.get("K_normalized") is not None:
        K = torch.as_tensor(traj.metadata["K_normalized"], dtype=torch.float64)
        norm = torch.stack([K[:, 0, 0], K[:, 1, 1], K[:, 0, 2], K[:, 1, 2]], -1)
    else:
        raise ValueError(f"save_realestate10k({path}): the trajectory has no intrinsics; set K and image_size, "
                         "or metadata['K_normalized'] [T, 3, 3]")
    if traj.timestamps is not None:
        stamps = traj.timestamps.to(torch.float64) * 1e6
    else:
        stamps = torch.arange(T, dtype=torch.float64) * (1e6 / traj.fps if traj.fps else 1.0)
    w2c = torch.linalg.inv(traj.c2w.to(torch.float64))[:, :3, :].reshape(T, 12)
    lines = [str(traj.metadata.get("url") or "")]
    for t in range(T):
        values = [*norm[t].tolist(), 0.0, 0.0, *w2c[t].tolist()]
        lines.append(f"{round(float(stamps[t]))} " + " ".join(f"{v:.9f}" for v in values))
    path.write_text("\n".join(lines) + "\n")
    return path


# ------------------------------------------------------------------------------------ nerfstudio / OpenGL
# OpenGL / nerfstudio cameras look down -z with y up; OpenCV looks down +z with y down. Flipping the camera's
# y and z axes (columns 1 and 2 of c2w) converts one into the other; the world is left as it is.
_NS_INTRINSICS = ("fl_x", "fl_y", "cx", "cy", "w", "h")


def opengl_to_opencv(c2w: Tensor) -> Tensor:
    """OpenGL / nerfstudio c2w ``[..., 4, 4]`` -> OpenCV c2w (its own inverse; kornia's graphics-to-vision)."""
    from kornia.geometry.conversions import camtoworld_graphics_to_vision_4x4

    return camtoworld_graphics_to_vision_4x4(c2w.reshape(-1, 4, 4)).reshape(c2w.shape)


opencv_to_opengl = opengl_to_opencv


def _nerfstudio_from_dict(data: Any, path: Path, dtype: torch.dtype) -> Trajectory:
    frames = data.get("frames") if isinstance(data, dict) else None
    if not isinstance(frames, list) or not frames:
        raise ValueError(f"{path}: expected a nerfstudio transforms.json with a non-empty 'frames' list")
    mats, intr, where, sizes = [], [], [], set()
    for i, frame in enumerate(frames):
        name = f"{path} frames[{i}] ({frame.get('file_path', 'no file_path')})"
        m = torch.tensor(frame.get("transform_matrix", []), dtype=torch.float64)
        if m.shape == (3, 4):
            m = homogeneous(m)
        if m.shape != (4, 4):
            raise ValueError(f"{name}: transform_matrix has shape {tuple(m.shape)}, expected 4x4 (or 3x4) c2w")
        mats.append(m)
        where.append(name)
        get = {k: frame.get(k, data.get(k)) for k in (*_NS_INTRINSICS, "camera_angle_x")}
        if get["fl_x"] is None and get["camera_angle_x"] is not None and get["w"] is not None:
            get["fl_x"] = 0.5 * get["w"] / torch.tan(torch.tensor(0.5 * get["camera_angle_x"])).item()
        if get["fl_y"] is None:
            get["fl_y"] = get["fl_x"]
        if get["cx"] is None and get["w"] is not None:
            get["cx"] = get["w"] / 2
        if get["cy"] is None and get["h"] is not None:
            get["cy"] = get["h"] / 2
        intr.append([get[k] for k in ("fl_x", "fl_y", "cx", "cy")])
        sizes.add((get["h"], get["w"]))
    c2w = opengl_to_opencv(torch.stack(mats))             # convention change: OpenGL camera axes -> OpenCV
    _check_poses(c2w, where)
    K = None
    if all(v is not None for row in intr for v in row):
        K = make_intrinsics(*torch.tensor(intr, dtype=torch.float64).unbind(-1), dtype=torch.float64)
        _check_K(K, where)
        K = K.to(dtype)
    (h, w), = sizes if len(sizes) == 1 else ((None, None),)
    used = {"frames", *_NS_INTRINSICS}
    metadata = {
        "format": "nerfstudio",
        "file_paths": [f.get("file_path") for f in frames],
        "frame_extras": [{k: v for k, v in f.items() if k not in ("file_path", "transform_matrix")} for f in frames],
        "extra": {k: v for k, v in data.items() if k not in used},
    }
    size = (int(h), int(w)) if h is not None and w is not None else None
    return Trajectory(c2w.to(dtype), K=K, image_size=size, metadata=metadata)


def load_nerfstudio(path: str | Path, dtype: torch.dtype = torch.float32) -> Trajectory:
    """nerfstudio / instant-ngp ``transforms.json`` (OpenGL c2w per frame) -> :class:`Trajectory`.

    Shared ``fl_x fl_y cx cy w h`` (or per-frame overrides, or ``camera_angle_x``) become K; ``file_path``s
    go to ``metadata['file_paths']``; other keys are kept in ``metadata`` so saving restores them.
    Distortion coefficients are kept but not applied.
    """
    path = Path(path)
    return _nerfstudio_from_dict(json.loads(path.read_text()), path, dtype)


def save_nerfstudio(path: str | Path, traj: Trajectory) -> Path:
    """Write a :class:`Trajectory` as nerfstudio ``transforms.json`` (OpenGL c2w; shared K when all equal)."""
    path = Path(path)
    T = len(traj)
    meta = traj.metadata
    data: dict[str, Any] = {"camera_model": "OPENCV", **meta.get("extra", {})}
    per_frame_K = False
    if traj.K is not None:
        K = traj.K.to(torch.float64)
        per_frame_K = not torch.allclose(K, K[:1].expand_as(K), rtol=0, atol=1e-9)
        if not per_frame_K:
            data.update(fl_x=K[0, 0, 0].item(), fl_y=K[0, 1, 1].item(), cx=K[0, 0, 2].item(), cy=K[0, 1, 2].item())
    if traj.image_size is not None:
        data.update(h=traj.image_size[0], w=traj.image_size[1])
    gl = opencv_to_opengl(traj.c2w.to(torch.float64))
    paths = meta.get("file_paths") or [f"images/frame_{t + 1:05d}.png" for t in range(T)]
    extras = meta.get("frame_extras") or [{} for _ in range(T)]
    frames = []
    for t in range(T):
        frame = {"file_path": paths[t], "transform_matrix": gl[t].tolist(), **extras[t]}
        if per_frame_K:
            frame.update(fl_x=K[t, 0, 0].item(), fl_y=K[t, 1, 1].item(), cx=K[t, 0, 2].item(), cy=K[t, 1, 2].item())
        frames.append(frame)
    data["frames"] = frames
    path.write_text(json.dumps(data, indent=2))
    return path


# ------------------------------------------------------------------------------------ realcam JSON
def _jsonable(x: Any) -> Any:
    if isinstance(x, Tensor):
        return x.tolist()
    raise TypeError(f"metadata value of type {type(x).__name__} is not JSON-serializable; use lists/str/numbers")


def save_trajectory(path: str | Path, traj: Trajectory) -> Path:
    """Write realcam's own JSON (schema v1, see docs/conventions.md). Tensors in metadata become lists."""
    path = Path(path)
    data = {
        "format": REALCAM_FORMAT, "version": REALCAM_VERSION, "convention": REALCAM_CONVENTION,
        "c2w": traj.c2w.to(torch.float64).tolist(),
        "K": traj.K.to(torch.float64).tolist() if traj.K is not None else None,
        "image_size": list(traj.image_size) if traj.image_size is not None else None,
        "fps": traj.fps,
        "timestamps": traj.timestamps.tolist() if traj.timestamps is not None else None,
        "metadata": traj.metadata,
    }
    path.write_text(json.dumps(data, indent=1, default=_jsonable))
    return path


def _realcam_from_dict(data: dict, path: Path, dtype: torch.dtype) -> Trajectory:
    if data.get("format") != REALCAM_FORMAT:
        raise ValueError(f"{path}: 'format' is {data.get('format')!r}, expected {REALCAM_FORMAT!r}")
    if not isinstance(data.get("version"), int) or data["version"] > REALCAM_VERSION:
        raise ValueError(f"{path}: schema version {data.get('version')!r} is not supported (this realcam reads "
                         f"<= {REALCAM_VERSION}); upgrade realcam or re-export the file")
    if data.get("convention", REALCAM_CONVENTION) != REALCAM_CONVENTION:
        raise ValueError(f"{path}: convention {data['convention']!r} != {REALCAM_CONVENTION!r}; convert on export")
    c2w = torch.tensor(data["c2w"], dtype=torch.float64)
    if c2w.ndim != 3 or c2w.shape[1:] != (4, 4):
        raise ValueError(f"{path}: 'c2w' has shape {tuple(c2w.shape)}, expected [T, 4, 4]")
    _check_poses(c2w, [f"{path} c2w[{t}]" for t in range(len(c2w))])
    K = None
    if data.get("K") is not None:
        K = torch.tensor(data["K"], dtype=torch.float64)
        if K.shape != (len(c2w), 3, 3):
            raise ValueError(f"{path}: 'K' has shape {tuple(K.shape)}, expected [{len(c2w)}, 3, 3] or null")
        _check_K(K, [f"{path} K[{t}]" for t in range(len(K))])
        K = K.to(dtype)
    size = data.get("image_size")
    return Trajectory(c2w.to(dtype), K=K, image_size=tuple(size) if size is not None else None, fps=data.get("fps"),
                      timestamps=data.get("timestamps"), metadata=data.get("metadata") or {})


def load_trajectory(path: str | Path, dtype: torch.dtype = torch.float32) -> Trajectory:
    """realcam trajectory JSON -> :class:`Trajectory` (checks format, version and convention)."""
    path = Path(path)
    return _realcam_from_dict(json.loads(path.read_text()), path, dtype)


# ------------------------------------------------------------------------------------ dispatch
def _pick_camera(cams: dict[str, Tensor], camera: Any, path: Path) -> str:
    if camera is None:
        if len(cams) == 1:
            return next(iter(cams))
        raise ValueError(f"{path} holds {len(cams)} cameras {sorted(cams)}: pass camera='{sorted(cams)[0]}' (or 1)")
    names = [str(camera), f"cam{int(camera):02d}"] if str(camera).isdigit() else [str(camera)]
    for name in names:
        if name in cams:
            return name
    raise ValueError(f"{path}: camera {camera!r} not found; available: {sorted(cams)}")


def load_any_trajectory(path: str | Path, camera: Any = None, image_size: tuple[int, int] | None = None,
                        dtype: torch.dtype = torch.float32) -> Trajectory:
    """Load any supported camera file as a :class:`Trajectory`, choosing the format from the content.

    JSON with ``format: realcam-trajectory`` -> realcam; with ``frames`` -> nerfstudio; with ``frame0`` keys
    -> MultiCamVideo (``camera`` picks one, as 'cam03' or 3); otherwise text -> RealEstate10K (``image_size``
    (H, W) denormalizes its K). Poses stay absolute; use ``relative_poses`` for a reference camera.
    """
    path = Path(path)
    text = path.read_text()
    if text.lstrip().startswith("{"):
        data = json.loads(text)
        if data.get("format") == REALCAM_FORMAT:
            kind = "realcam"
        elif "frames" in data:
            kind = "nerfstudio"
        elif data and all(re.fullmatch(r"frame\d+", k) for k in data):
            cams = _multicam_from_dict(data, path, dtype)
            cam = _pick_camera(cams, camera, path)
            return Trajectory(cams[cam], metadata={"format": "multicam", "camera": cam})
        else:
            raise ValueError(f"{path}: JSON is none of realcam-trajectory, nerfstudio transforms.json or "
                             "MultiCamVideo camera_extrinsics.json")
        if camera is not None:
            raise ValueError(f"{path} is a {kind} file with one camera: camera={camera!r} only applies to "
                             "MultiCamVideo files")
        traj = (_realcam_from_dict if kind == "realcam" else _nerfstudio_from_dict)(data, path, dtype)
        return traj
    if camera is not None:
        raise ValueError(f"{path} is a RealEstate10K file with one camera: camera={camera!r} only applies to "
                         "MultiCamVideo files")
    return load_realestate10k(path, image_size=image_size, dtype=dtype)
