"""Poses and intrinsics in realcam's one convention: validation, rigid inverse, relative poses, intrinsics.

The convention (docs/conventions.md): OpenCV camera frame (x right, y down, z forward); poses are
camera-to-world 4x4 ``c2w`` in metres; intrinsics ``K`` are 3x3 in pixels with pixel centres at +0.5.
The rigid algebra is kornia's (``kornia.geometry.linalg``); the validators are realcam's own, because their
errors name the offending frame and the fix. :mod:`realcam.geometry` re-exports everything here.
"""
from __future__ import annotations

import math
from typing import Any, Callable

import torch
from kornia.geometry import linalg as kornia_linalg
from torch import Tensor

POSE_REFERENCES = ("first_source", "current_source")
_CV_HINT = "expected OpenCV camera-to-world (x right, y down, z forward, metres; see docs/conventions.md)"


# ----------------------------------------------------------------------------------------------- validation
def _index(flat: int, batch_shape: torch.Size) -> str:
    """Flat batch index -> '[3]' or '[0, 3]' ('' for an unbatched matrix)."""
    if len(batch_shape) == 0:
        return ""
    idx = []
    for n in reversed(batch_shape):
        idx.append(flat % n)
        flat //= n
    return "[" + ", ".join(str(i) for i in reversed(idx)) + "]"


def _first(bad: Tensor) -> int | None:
    hits = torch.nonzero(bad.reshape(-1))
    return int(hits[0, 0]) if len(hits) else None


def _c2w_problem(c2w: Tensor, atol: float) -> tuple[int, str] | None:
    """First bad pose in ``c2w [N, 4, 4]`` as (index, reason), reason reading after the pose's name."""
    x = c2w.detach().to(torch.float64)
    i = _first(~torch.isfinite(x).flatten(1).all(1))
    if i is not None:
        return i, f"contains NaN or inf: {_CV_HINT}; drop or repair that pose"
    last = torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=x.dtype, device=x.device)
    i = _first((x[:, 3] - last).abs().amax(1) > atol)
    if i is not None:
        row = [round(v, 4) for v in x[i, 3].tolist()]
        return i, f"has last row {row}: {_CV_HINT} with last row [0, 0, 0, 1]"
    R = x[:, :3, :3]
    eye = torch.eye(3, dtype=x.dtype, device=x.device)
    ortho = (R.transpose(-1, -2) @ R - eye).abs().amax((1, 2))
    det = torch.linalg.det(R)
    i = _first(ortho > atol)
    if i is not None:
        return i, (f"is not a rigid transform (det={round(det[i].item(), 4)}, "
                   f"max|R^T R - I|={ortho[i].item():.3g}): {_CV_HINT}; remove scale or shear from the rotation")
    i = _first((det - 1.0).abs() > atol)
    if i is not None:
        return i, (f"is not a rigid transform (det={round(det[i].item(), 4)}): {_CV_HINT}; det -1 means a mirrored "
                   "axis, e.g. an OpenGL or Unreal pose that was not converted")
    return None


def _K_problem(K: Tensor, atol: float) -> tuple[int, str] | None:
    """First bad intrinsics in ``K [N, 3, 3]`` as (index, reason)."""
    x = K.detach().to(torch.float64)
    i = _first(~torch.isfinite(x).flatten(1).all(1))
    if i is not None:
        return i, "contains NaN or inf: expected finite pinhole intrinsics in pixels"
    zeros = torch.stack([x[:, 0, 1], x[:, 1, 0], x[:, 2, 0], x[:, 2, 1], x[:, 2, 2] - 1.0], 1)
    i = _first(zeros.abs().amax(1) > atol)
    if i is not None:
        rows = [[round(v, 4) for v in r] for r in x[i].tolist()]
        return i, (f"is not a zero-skew pinhole matrix ({rows}): expected [[fx, 0, cx], [0, fy, cy], [0, 0, 1]] "
                   "in pixels; divide by K[2, 2] and drop any skew")
    i = _first((x[:, 0, 0] <= 0) | (x[:, 1, 1] <= 0))
    if i is not None:
        return i, (f"has fx={x[i, 0, 0].item():.4g}, fy={x[i, 1, 1].item():.4g}: focal lengths must be positive "
                   "pixels; a negative one means a flipped image axis that belongs in the pose instead")
    return None


def _check(x: Any, name: str, tail: tuple[int, int], problem: Callable, atol: float, what: str) -> Tensor:
    x = torch.as_tensor(x)
    if x.ndim < 2 or tuple(x.shape[-2:]) != tail:
        raise ValueError(f"{name} has shape {tuple(x.shape)}: expected [..., {tail[0]}, {tail[1]}] {what}")
    if not x.is_floating_point():
        raise TypeError(f"{name} has dtype {x.dtype}: expected a floating-point tensor of {what}")
    if x.numel() == 0:
        return x
    found = problem(x.reshape(-1, *tail), atol)
    if found is not None:
        i, reason = found
        raise ValueError(f"{name}{_index(i, x.shape[:-2])} {reason}")
    return x


def validate_c2w(c2w: Tensor, name: str = "c2w", atol: float = 1e-3) -> Tensor:
    """Check ``c2w [..., 4, 4]`` is finite and rigid (R^T R = I, det R = +1, last row [0, 0, 0, 1]).

    Returns the input as a tensor. The error names the offending index, e.g.
    ``target_c2w[3] is not a rigid transform (det=-1): expected OpenCV camera-to-world ...``.
    """
    return _check(c2w, name, (4, 4), _c2w_problem, atol, "camera-to-world matrices")


def validate_intrinsics(K: Tensor, name: str = "K", atol: float = 1e-4) -> Tensor:
    """Check ``K [..., 3, 3]`` is finite, zero-skew ``[[fx, 0, cx], [0, fy, cy], [0, 0, 1]]`` with fx, fy > 0."""
    return _check(K, name, (3, 3), _K_problem, atol, "pinhole intrinsics in pixels")


# ---------------------------------------------------------------------------------------------- basic ops
def _flat(fn: Callable[..., Tensor], *mats: Tensor) -> Tensor:
    """Apply kornia's ``[N, 4, 4]`` transform function to ``[..., 4, 4]`` inputs (broadcast together)."""
    mats = torch.broadcast_tensors(*mats)
    return fn(*(m.reshape(-1, 4, 4) for m in mats)).reshape(mats[0].shape)


def rigid_inverse(c2w: Tensor) -> Tensor:
    """Inverse of rigid ``[..., 4, 4]`` transforms via R^T (exact for orthonormal R, no solver)."""
    return _flat(kornia_linalg.inverse_transformation, c2w)


def homogeneous(Rt: Tensor) -> Tensor:
    """``[..., 3, 4]`` pose -> ``[..., 4, 4]`` with last row [0, 0, 0, 1]."""
    last = torch.zeros(*Rt.shape[:-2], 1, 4, dtype=Rt.dtype, device=Rt.device)
    last[..., 0, 3] = 1.0
    return torch.cat([Rt, last], dim=-2)


def relative_poses(source_c2w: Tensor, target_c2w: Tensor, reference: str = "first_source") -> Tensor:
    """Target poses expressed in a source camera's frame. ``[..., T, 4, 4]`` x2 -> ``[..., T, 4, 4]``.

    ``first_source``: ``inv(source_c2w[0]) @ target_c2w[t]`` (ReCamMaster's convention).
    ``current_source``: ``inv(source_c2w[t]) @ target_c2w[t]`` (live use, source motion unknown).
    Inputs are assumed valid (call :func:`validate_c2w` at the edges; this stays free of host syncs).
    """
    if source_c2w.ndim < 3 or target_c2w.ndim < 3:
        raise ValueError(f"source_c2w {tuple(source_c2w.shape)} and target_c2w {tuple(target_c2w.shape)} "
                         "must both be [..., T, 4, 4]")
    if reference == "first_source":
        ref = source_c2w[..., :1, :, :]
    elif reference == "current_source":
        if source_c2w.shape[-3] != target_c2w.shape[-3]:
            raise ValueError(f"current_source needs equal T: source_c2w has {source_c2w.shape[-3]} frames, "
                             f"target_c2w {target_c2w.shape[-3]}; pass one source pose per target pose")
        ref = source_c2w
    else:
        raise ValueError(f"reference={reference!r} is not a pose reference mode: expected one of {POSE_REFERENCES}")
    return _flat(kornia_linalg.relative_transformation, ref, target_c2w)   # inv(ref) @ target


# ---------------------------------------------------------------------------------------------- intrinsics
def make_intrinsics(fx: Any, fy: Any, cx: Any, cy: Any, dtype: torch.dtype = torch.float32) -> Tensor:
    """Broadcast fx, fy, cx, cy (pixels) into ``K [..., 3, 3]``."""
    fx, fy, cx, cy = torch.broadcast_tensors(*(torch.as_tensor(v, dtype=dtype) for v in (fx, fy, cx, cy)))
    K = torch.zeros(*fx.shape, 3, 3, dtype=dtype)
    K[..., 0, 0], K[..., 1, 1], K[..., 0, 2], K[..., 1, 2], K[..., 2, 2] = fx, fy, cx, cy, 1.0
    return K


def fov_intrinsics(height: int, width: int, fov_x_degrees: float) -> Tensor:
    """``K [3, 3]`` for a centred square-pixel camera with horizontal field of view ``fov_x_degrees``."""
    f = 0.5 * width / math.tan(math.radians(fov_x_degrees) / 2)
    return make_intrinsics(f, f, width / 2, height / 2)


def resize_intrinsics(K: Tensor, old_hw: tuple[int, int], new_hw: tuple[int, int]) -> Tensor:
    """``K [..., 3, 3]`` for an image resized from ``old_hw`` to ``new_hw`` (H, W).

    With pixel centres at +0.5 the image spans [0, W] x [0, H] continuously, so resizing is a pure scale:
    row 0 (fx, skew, cx) by W'/W and row 1 (fy, cy) by H'/H.
    """
    (h, w), (h2, w2) = old_hw, new_hw
    if min(h, w, h2, w2) <= 0:
        raise ValueError(f"resize_intrinsics got old_hw={old_hw}, new_hw={new_hw}: sizes must be positive (H, W)")
    out = K.clone()
    out[..., 0, :] = K[..., 0, :] * (w2 / w)
    out[..., 1, :] = K[..., 1, :] * (h2 / h)
    return out


def crop_intrinsics(K: Tensor, top: Any, left: Any) -> Tensor:
    """``K [..., 3, 3]`` for the crop whose top-left pixel corner is at (top, left): the principal point shifts."""
    out = K.clone()
    out[..., 0, 2] = K[..., 0, 2] - torch.as_tensor(left, dtype=K.dtype, device=K.device)
    out[..., 1, 2] = K[..., 1, 2] - torch.as_tensor(top, dtype=K.dtype, device=K.device)
    return out
