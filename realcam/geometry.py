"""Cameras in one convention: validation, relative poses, intrinsics, Plücker rays, trajectory builders.

The convention (docs/conventions.md): OpenCV camera frame (x right, y down, z forward); poses are
camera-to-world 4x4 ``c2w`` in metres; intrinsics ``K`` are 3x3 in pixels with pixel centres at +0.5
(pixel (i, j) has its centre at u = j + 0.5, v = i + 0.5). Other conventions are converted on import by
:mod:`realcam.geometry_io`, whose public names are re-exported here, as are those of :mod:`realcam.poses`
(validation, rigid inverse, relative poses, intrinsics). Rotation algebra is kornia's.

Builders return ``c2w [T, 4, 4]`` float32 relative to the start camera (``c2w[0]`` is the identity);
place one in a scene with ``base_c2w @ c2w``. Sign conventions, all in the camera's own frame:

- ``pan(+deg)``   turns right: the forward axis (column z of R) turns towards +x.
- ``tilt(+deg)``  turns up: the forward axis turns towards -y.
- ``dolly(+m)``   moves forward, along +z.
- ``translate((x, y, z))`` moves by that offset; "up" is -y.
- ``arc(+deg)``   orbits left around a point ``radius`` ahead: the camera moves along -x while turning
  towards +x, so it keeps looking at the point.
"""
from __future__ import annotations

import math
from typing import Any, Callable

import torch
from kornia.geometry import conversions as kornia_conversions
from torch import Tensor

from realcam.geometry_io import (Trajectory, load_any_trajectory, load_multicam_json, load_nerfstudio,  # noqa: F401
                                 load_realestate10k, load_trajectory, opencv_to_opengl, opencv_to_unreal,
                                 opengl_to_opencv, save_multicam_json, save_nerfstudio, save_realestate10k,
                                 save_trajectory, unreal_to_opencv)
from realcam.poses import (POSE_REFERENCES, crop_intrinsics, fov_intrinsics, homogeneous,  # noqa: F401
                           make_intrinsics, relative_poses, resize_intrinsics, rigid_inverse, validate_c2w,
                           validate_intrinsics)

# ---------------------------------------------------------------------------------------------- Plücker
def _pinhole_inverse(K: Tensor) -> Tensor:
    """Closed-form inverse of upper-triangular ``K [..., 3, 3]`` (no batched solver on the GPU).

    Hand-written rather than kornia's ``unproject_points``: it runs inside the network's reprojection on every
    forward, where one einsum over a shared pixel grid beats a per-pixel K broadcast, and it keeps the bundled
    student's outputs bit for bit."""
    fx, fy, s, cx, cy = K[..., 0, 0], K[..., 1, 1], K[..., 0, 1], K[..., 0, 2], K[..., 1, 2]
    out = torch.zeros_like(K)
    out[..., 0, 0], out[..., 1, 1], out[..., 2, 2] = 1.0 / fx, 1.0 / fy, 1.0
    out[..., 0, 1] = -s / (fx * fy)
    out[..., 0, 2] = (s * cy - cx * fy) / (fx * fy)
    out[..., 1, 2] = -cy / fy
    return out


def pixel_rays(K: Tensor, height: int, width: int) -> Tensor:
    """Camera-frame ray directions ``K^-1 [u, v, 1]`` (z = 1) through every pixel centre (u = j + 0.5,
    v = i + 0.5, row-major) of a ``height`` x ``width`` image: ``K [..., 3, 3]`` -> ``[..., H*W, 3]``."""
    v, u = torch.meshgrid(torch.arange(height, dtype=K.dtype, device=K.device) + 0.5,
                          torch.arange(width, dtype=K.dtype, device=K.device) + 0.5, indexing="ij")
    pix = torch.stack([u, v, torch.ones_like(u)], -1).reshape(-1, 3)                  # [HW, 3]
    return torch.einsum("...ij,nj->...ni", _pinhole_inverse(K), pix)


def plucker_rays(c2w: Tensor, K: Tensor, height: int, width: int) -> Tensor:
    """Per-pixel Plücker rays ``(o x d, d)``, moment first. ``c2w [..., 4, 4]``, ``K [..., 3, 3]`` (pixels of a
    ``height`` x ``width`` image; leading dims broadcast) -> ``[..., 6, height, width]``.

    o is the camera centre, d = normalize(R K^-1 [u, v, 1]) with u = j + 0.5, v = i + 0.5.
    """
    dtype = torch.promote_types(torch.promote_types(c2w.dtype, K.dtype), torch.float32)
    c2w, K = c2w.to(dtype), K.to(dtype)
    lead = torch.broadcast_shapes(c2w.shape[:-2], K.shape[:-2])
    rays = pixel_rays(K, height, width)                                                # [..., HW, 3]
    d = torch.nn.functional.normalize(torch.einsum("...ij,...nj->...ni", c2w[..., :3, :3], rays), dim=-1)
    d = d.expand(*lead, height * width, 3)
    o = c2w[..., None, :3, 3].expand_as(d)
    rays = torch.cat([torch.linalg.cross(o, d, dim=-1), d], dim=-1)                   # [..., HW, 6]
    return rays.transpose(-1, -2).reshape(*lead, 6, height, width)


# ---------------------------------------------------------------------------------------------- rotations
def so3_exp(w: Tensor) -> Tensor:
    """Axis-angle ``[..., 3]`` (radians) -> rotation ``[..., 3, 3]`` (kornia's Rodrigues, Taylor-safe near 0)."""
    return kornia_conversions.axis_angle_to_rotation_matrix(w)


def matrix_to_quaternion(R: Tensor) -> Tensor:
    """Rotation ``[..., 3, 3]`` -> unit quaternion ``[..., 4]`` (w, x, y, z) with w >= 0 (kornia's, sign fixed)."""
    q = kornia_conversions.rotation_matrix_to_quaternion(R, eps=0.0)
    return torch.where(q[..., :1] < 0, -q, q)


def so3_log(R: Tensor) -> Tensor:
    """Rotation ``[..., 3, 3]`` -> axis-angle ``[..., 3]`` with angle in [0, pi] (kornia, via the quaternion)."""
    return kornia_conversions.rotation_matrix_to_axis_angle(R)


def _rot(axis: int, angle: Tensor) -> Tensor:
    w = torch.zeros(*angle.shape, 3, dtype=angle.dtype)
    w[..., axis] = angle
    return so3_exp(w)


def look_at(eye: Any, target: Any, up: Any = (0.0, -1.0, 0.0)) -> Tensor:
    """OpenCV ``c2w [4, 4]`` at ``eye`` looking at ``target``; ``up`` is the world's up (default -y)."""
    eye, target, up = (torch.as_tensor(v, dtype=torch.float64) for v in (eye, target, up))
    z = torch.nn.functional.normalize(target - eye, dim=0)
    x = torch.linalg.cross(-up, z)                     # OpenCV is right-handed with y down: right = down x forward
    if x.norm() < 1e-9:
        raise ValueError(f"look_at: view direction {z.tolist()} is parallel to up={up.tolist()}; pick another up")
    x = x / x.norm()
    c2w = torch.eye(4, dtype=torch.float64)
    c2w[:3, :3] = torch.stack([x, torch.linalg.cross(z, x), z], 1)
    c2w[:3, 3] = eye
    return c2w.float()


# ---------------------------------------------------------------------------------------------- builders
def _ramp(T: int) -> Tensor:
    if not isinstance(T, int) or isinstance(T, bool) or T < 1:
        raise ValueError(f"T={T!r}: the number of frames must be an int >= 1")
    return torch.linspace(0.0, 1.0, T, dtype=torch.float64)


def _pose(R: Tensor, t: Tensor) -> Tensor:
    c2w = torch.eye(4, dtype=torch.float64).repeat(R.shape[0], 1, 1)
    c2w[:, :3, :3], c2w[:, :3, 3] = R, t
    return c2w.float()


def static(T: int) -> Tensor:
    """``[T, 4, 4]`` identity poses: a camera that does not move."""
    return torch.eye(4).repeat(len(_ramp(T)), 1, 1)


def pan(T: int, degrees: float) -> Tensor:
    """Turn about the camera's y axis by ``degrees`` in total; + = right (forward turns towards +x)."""
    return _pose(_rot(1, math.radians(degrees) * _ramp(T)), torch.zeros(T, 3, dtype=torch.float64))


def tilt(T: int, degrees: float) -> Tensor:
    """Turn about the camera's x axis by ``degrees`` in total; + = up (forward turns towards -y)."""
    return _pose(_rot(0, math.radians(degrees) * _ramp(T)), torch.zeros(T, 3, dtype=torch.float64))


def dolly(T: int, distance: float) -> Tensor:
    """Move ``distance`` metres along the optical axis; + = forward (+z)."""
    return translate(T, (0.0, 0.0, distance))


def translate(T: int, offset_xyz: Any) -> Tensor:
    """Move linearly by ``offset_xyz`` metres in the start camera's frame (x right, y down, z forward)."""
    offset = torch.as_tensor(offset_xyz, dtype=torch.float64)
    if offset.shape != (3,):
        raise ValueError(f"offset_xyz={offset_xyz!r}: expected three numbers (x right, y down, z forward) in metres")
    s = _ramp(T)
    return _pose(torch.eye(3, dtype=torch.float64).expand(T, 3, 3), s[:, None] * offset)


def _orbit_pose(yaw: Tensor, pitch: Tensor, radius: float) -> Tensor:
    """Camera on a sphere of ``radius`` around the point (0, 0, radius), always looking at it."""
    R = _rot(1, yaw) @ _rot(0, pitch)
    pivot = torch.tensor([0.0, 0.0, radius], dtype=torch.float64)
    return _pose(R, pivot - radius * R[..., :, 2])


def arc(T: int, degrees: float, radius: float = 2.0) -> Tensor:
    """Orbit ``degrees`` around the point ``radius`` metres ahead, looking at it; + = left.

    Arc left (+) moves the camera along -x while it turns towards +x (like ReCamMaster's cam09).
    """
    if radius <= 0:
        raise ValueError(f"arc radius={radius}: expected a positive distance in metres to the orbit centre")
    yaw = math.radians(degrees) * _ramp(T)
    return _orbit_pose(yaw, torch.zeros_like(yaw), radius)


def _catmull_rom(p0: Tensor, p1: Tensor, p2: Tensor, p3: Tensor, s: Tensor) -> Tensor:
    s = s[:, None]
    return 0.5 * (2 * p1 + (p2 - p0) * s + (2 * p0 - 5 * p1 + 4 * p2 - p3) * s**2 + (3 * p1 - p0 - 3 * p2 + p3) * s**3)


def waypoints(key_c2w: Tensor, T: int, closed: bool = False) -> Tensor:
    """Smooth path through key poses ``[N, 4, 4]`` -> ``[T, 4, 4]`` (starts at ``key_c2w[0]``, not identity).

    Positions follow a Catmull-Rom spline; rotations a Catmull-Rom spline in the tangent space (so3 log)
    of each segment's start key, mapped back with exp. Keys are spread evenly over the frames. Neighbouring
    keys must differ by less than 180 degrees. ``closed=True`` also joins the last key back to the first
    and ends exactly at the start.
    """
    s_all = _ramp(T)
    keys = validate_c2w(torch.as_tensor(key_c2w), name="key_c2w").to(torch.float64)
    if keys.ndim != 3 or len(keys) < 1:
        raise ValueError(f"key_c2w has shape {tuple(keys.shape)}: expected [N, 4, 4] with N >= 1 key poses")
    N = len(keys)
    if N == 1:
        return keys[0].expand(T, 4, 4).float().clone()
    R, p = keys[:, :3, :3], keys[:, :3, 3]
    segments = N if closed else N - 1
    u = s_all * segments
    seg = u.floor().long().clamp(max=segments - 1)
    out = torch.empty(T, 4, 4, dtype=torch.float64)
    for k in range(segments):
        sel = seg == k
        if not sel.any():
            continue
        s = u[sel] - k
        idx = [k - 1, k, k + 1, k + 2]
        if closed:
            idx = [i % N for i in idx]
        w1 = so3_log(R[k].T @ R[idx[2]])
        pts, ws = [], []
        for j, i in enumerate(idx):
            if 0 <= i < N:
                pts.append(p[i])
                ws.append(so3_log(R[k].T @ R[i]) if j != 1 else torch.zeros(3, dtype=torch.float64))
            elif i < 0:  # mirror the second key through the first
                pts.append(2 * p[0] - p[1])
                ws.append(-w1)
            else:        # mirror the second-to-last key through the last
                pts.append(2 * p[N - 1] - p[N - 2])
                ws.append(2 * w1)
        out[sel] = _pose(R[k] @ so3_exp(_catmull_rom(*ws, s)), _catmull_rom(*pts, s)).double()
    if closed:
        out[-1] = keys[0]
    return out.float()


# ---------------------------------------------------------------------------------------------- loops
def _pingpong(build: Callable[[int], Tensor], T: int) -> Tensor:
    """Go out along ``build`` and come back along the same poses (exact revisits: c2w[t] == c2w[T-1-t])."""
    _ramp(T)
    half = build(T // 2 + 1) if T % 2 else build(max(T // 2, 1))
    back = half.flip(0)[1:] if T % 2 else half.flip(0)
    return torch.cat([half, back])[:T]


def _loop_orbit(T: int, degrees: float = 20.0, radius: float = 2.0) -> Tensor:
    """Circle the point ``radius`` ahead while looking at it. The view direction traces a circle of angular
    diameter ``degrees``: first left (like arc left), then up over the point, then back."""
    phase = 2 * math.pi * _ramp(T)
    a = math.radians(degrees) / 2
    c2w = _orbit_pose(a * torch.sin(phase), -a * (1 - torch.cos(phase)), radius)
    c2w[-1] = c2w[0]
    return c2w


def _loop_circle(T: int, radius: float = 0.25) -> Tensor:
    """Translate around a circle of ``radius`` metres in the image plane (right, then up), no rotation."""
    phase = 2 * math.pi * _ramp(T)
    t = torch.stack([radius * torch.sin(phase), -radius * (1 - torch.cos(phase)), torch.zeros_like(phase)], -1)
    c2w = _pose(torch.eye(3, dtype=torch.float64).expand(T, 3, 3), t)
    c2w[-1] = c2w[0]
    return c2w


def _loop_square(T: int, size: float = 0.5) -> Tensor:
    """Translate around a square of side ``size`` metres in the image plane: right, up, left, down."""
    corners = torch.tensor([[0, 0, 0], [1, 0, 0], [1, -1, 0], [0, -1, 0], [0, 0, 0]], dtype=torch.float64) * size
    u = _ramp(T) * 4
    k = u.floor().long().clamp(max=3)
    t = corners[k] + (u - k)[:, None] * (corners[k + 1] - corners[k])
    c2w = _pose(torch.eye(3, dtype=torch.float64).expand(T, 3, 3), t)
    c2w[-1] = c2w[0]
    return c2w


_OPEN_BUILDERS: dict[str, Callable[..., Tensor]] = {"pan": pan, "tilt": tilt, "dolly": dolly,
                                                    "translate": translate, "arc": arc}
_CLOSED_LOOPS: dict[str, Callable[..., Tensor]] = {"orbit": _loop_orbit, "circle": _loop_circle,
                                                   "square": _loop_square}
LOOP_KINDS = (*_CLOSED_LOOPS, *(f"pingpong_{k}" for k in _OPEN_BUILDERS))


def loop(kind: str, T: int, **kwargs: Any) -> Tensor:
    """Closed path ``[T, 4, 4]`` with ``c2w[-1] == c2w[0]`` exactly (the identity).

    Kinds: ``orbit(degrees=20, radius=2)``, ``circle(radius=0.25)``, ``square(size=0.5)``, and
    ``pingpong_<pan|tilt|dolly|translate|arc>(**that builder's args)``, which goes out and retraces its path.
    """
    if kind.startswith("pingpong_") and kind[len("pingpong_"):] in _OPEN_BUILDERS:
        build = _OPEN_BUILDERS[kind[len("pingpong_"):]]
        return _pingpong(lambda n: build(n, **kwargs), T)
    if kind not in _CLOSED_LOOPS:
        raise ValueError(f"loop kind {kind!r} is unknown: expected one of {LOOP_KINDS}")
    return _CLOSED_LOOPS[kind](T, **kwargs)


# ---------------------------------------------------------------------------------------------- specs
_SIGNS = {
    "pan": {"right": 1.0, "left": -1.0},
    "tilt": {"up": 1.0, "down": -1.0},
    "dolly": {"forward": 1.0, "in": 1.0, "backward": -1.0, "back": -1.0, "out": -1.0},
    "arc": {"left": 1.0, "right": -1.0},
}
_AXES = {"right": (1, 0, 0), "left": (-1, 0, 0), "down": (0, 1, 0), "up": (0, -1, 0),
         "forward": (0, 0, 1), "backward": (0, 0, -1), "back": (0, 0, -1)}
_LOOP_AMOUNT = {"orbit": ("degrees", "radius"), "circle": ("radius",), "square": ("size",)}
SPEC_EXAMPLES = ("static", "pan:right:20", "tilt:up:10", "dolly:forward:0.5", "zoom:in:0.5", "translate:up:0.3",
                 "translate:0.1,0,0", "arc:left:30", "arc:left:30:4.0", "loop:orbit:20", "loop:square:0.5",
                 "loop:pingpong_pan:right:20")


def _num(spec: str, tok: str) -> float:
    try:
        return float(tok)
    except ValueError:
        raise ValueError(f"trajectory spec {spec!r}: {tok!r} is not a number; examples: {SPEC_EXAMPLES}") from None


def _builder_from_parts(spec: str, parts: list[str]) -> Callable[[int], Tensor]:
    kind, args = parts[0], parts[1:]
    kind = "dolly" if kind == "zoom" else kind
    if kind == "static" and not args:
        return static
    if kind == "translate" and len(args) == 1 and "," in args[0]:
        xyz = [_num(spec, v) for v in args[0].split(",")]
        return lambda T: translate(T, xyz)
    if kind == "translate" and len(args) == 2:
        if args[0] not in _AXES:
            raise ValueError(f"trajectory spec {spec!r}: translate direction {args[0]!r} is not one of {list(_AXES)}")
        amount = _num(spec, args[1])
        return lambda T: translate(T, [amount * a for a in _AXES[args[0]]])
    if kind in _SIGNS and args:
        sign = 1.0
        if args[0] in _SIGNS[kind]:
            sign, args = _SIGNS[kind][args[0]], args[1:]
        elif args[0].isalpha():
            raise ValueError(f"trajectory spec {spec!r}: {kind} direction {args[0]!r} is not one of "
                             f"{list(_SIGNS[kind])}")
        nums = [_num(spec, a) for a in args]
        if len(nums) == 1 or (kind == "arc" and len(nums) == 2):
            return lambda T: _OPEN_BUILDERS[kind](T, sign * nums[0], *nums[1:])
    if kind == "loop" and args:
        sub, rest = args[0], args[1:]
        if sub.startswith("pingpong_"):
            build = _builder_from_parts(spec, [sub[len("pingpong_"):], *rest])
            return lambda T: _pingpong(build, T)
        if sub in _LOOP_AMOUNT and len(rest) <= len(_LOOP_AMOUNT[sub]):
            kw = {name: _num(spec, v) for name, v in zip(_LOOP_AMOUNT[sub], rest)}
            return lambda T: loop(sub, T, **kw)
        raise ValueError(f"trajectory spec {spec!r}: loop kind {sub!r} is unknown or has too many values; "
                         f"expected one of {LOOP_KINDS}, e.g. 'loop:orbit:20'")
    raise ValueError(f"trajectory spec {spec!r} is not understood: expected kind[:direction]:amount, "
                     f"e.g. {SPEC_EXAMPLES}")


def parse_trajectory_spec(spec: str, T: int) -> Tensor:
    """``"arc:left:30"``, ``"pan:right:20"``, ``"dolly:0.5"``, ``"loop:orbit:20"``, ... -> ``c2w [T, 4, 4]``.

    Grammar: ``kind[:direction]:amount`` with kinds pan (deg, right|left), tilt (deg, up|down), dolly / zoom
    (m, forward|in|backward|out), translate (m, right|left|up|down|forward|backward, or ``x,y,z``), arc
    (deg, left|right, optional ``:radius``), ``static``, and ``loop:<kind>[:args]`` (see :func:`loop`).
    A bare signed amount uses the builder's sign convention (pan + = right, tilt + = up, arc + = left).
    """
    parts = [p.strip().lower() for p in str(spec).strip().split(":")]
    return _builder_from_parts(spec, parts)(T)


_IO_NAMES = ("Trajectory", "load_multicam_json", "save_multicam_json", "unreal_to_opencv", "opencv_to_unreal",
             "load_realestate10k", "save_realestate10k", "load_nerfstudio", "save_nerfstudio",
             "opengl_to_opencv", "opencv_to_opengl", "load_trajectory", "save_trajectory", "load_any_trajectory")
__all__ = [
    "POSE_REFERENCES", "LOOP_KINDS", "SPEC_EXAMPLES", "validate_c2w", "validate_intrinsics", "rigid_inverse",
    "homogeneous", "relative_poses", "make_intrinsics", "fov_intrinsics", "resize_intrinsics", "crop_intrinsics",
    "pixel_rays", "plucker_rays", "so3_exp", "so3_log", "matrix_to_quaternion", "look_at", "static", "pan", "tilt", "dolly",
    "translate", "arc", "waypoints", "loop", "parse_trajectory_spec", *_IO_NAMES,
]
