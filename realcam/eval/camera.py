"""Camera accuracy of a generated video: RotErr, TransErr and CamMC between a requested and an estimated camera
path, per frame and summed (CamI2V's protocol; formulas and what is comparable: docs/metrics.md).

Pure functions over ``c2w [T, 4, 4]`` tensors (OpenCV camera-to-world). Both paths are first made relative to
their own frame 0 (``inv(c2w[0]) @ c2w[t]``), so only the motion counts, not where a path starts. A monocular
estimate has no metric scale, so translations are compared after normalising the scale of each path
(``scale="max_norm"``: each path divided by its own largest camera distance from frame 0, as CamI2V does) or
after a least-squares fit of the estimate's scale to the request (``scale="least_squares"``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from realcam.geometry import rigid_inverse, validate_c2w

SCALE_MODES = ("max_norm", "least_squares")
_EPS = 1e-9


def relative_to_first(c2w: Tensor) -> Tensor:
    """``[T, 4, 4]`` -> ``inv(c2w[0]) @ c2w`` in float64: frame 0 becomes the identity."""
    c2w = c2w.to(torch.float64)
    return rigid_inverse(c2w[0])[None] @ c2w


def rotation_angles(R_a: Tensor, R_b: Tensor) -> Tensor:
    """Geodesic angle (radians) between rotations ``[..., 3, 3]`` x2: ``acos((tr(R_a^T R_b) - 1) / 2)``.

    Computed as ``atan2(sin, cos)`` with ``sin = ||vee(D - D^T)|| / 2``, the same angle without acos's loss of
    precision near 0 (a float32 pose would otherwise read as ~0.02 degrees off itself).
    """
    D = R_a.transpose(-1, -2) @ R_b
    cos = (D.diagonal(dim1=-2, dim2=-1).sum(-1) - 1.0) / 2.0
    A = D - D.transpose(-1, -2)
    sin = torch.stack([A[..., 2, 1], A[..., 0, 2], A[..., 1, 0]], -1).norm(dim=-1) / 2.0
    return torch.atan2(sin, cos)


def normalize_scale(gt: Tensor, est: Tensor, mode: str = "max_norm") -> tuple[Tensor, Tensor]:
    """Scale the translations of two relative paths ``[T, 4, 4]`` so that they can be compared.

    ``max_norm``: each path's translations are divided by its own largest ``||t||`` (a path that never moves
    stays at zero). ``least_squares``: the request is divided by its largest ``||t||`` and the estimate is
    multiplied by ``s = sum(t_gt . t_est) / sum(||t_est||^2)``, the scale that fits it best.
    """
    if mode not in SCALE_MODES:
        raise ValueError(f"scale={mode!r}: choose one of {', '.join(SCALE_MODES)}")
    gt, est = gt.clone(), est.clone()
    t_gt, t_est = gt[:, :3, 3], est[:, :3, 3]
    gt[:, :3, 3] = t_gt / (t_gt.norm(dim=-1).amax() + _EPS)
    if mode == "max_norm":
        est[:, :3, 3] = t_est / (t_est.norm(dim=-1).amax() + _EPS)
    else:
        s = (gt[:, :3, 3] * t_est).sum() / (t_est.square().sum() + _EPS)
        est[:, :3, 3] = t_est * s
    return gt, est


@dataclass
class CameraErrors:
    """Per-frame errors ``[T]`` (frame 0 included, where both paths are the identity) and their sums."""

    rot_err_deg: Tensor          # geodesic angle between R_gt and R_est, degrees
    trans_err: Tensor            # ||t_gt - t_est|| after scale normalisation (unitless)
    cammc: Tensor                # ||[R|t]_gt - [R|t]_est||_F over the flattened 3x4 (unitless)
    direction_cos: float | None  # cosine between the two paths' final translations (None if either is ~0)
    scale: str
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def frames(self) -> int:
        return len(self.rot_err_deg)

    def summary(self) -> dict[str, Any]:
        """RotErr (radians and degrees), TransErr and CamMC summed over frames, plus per-frame means."""
        T = max(self.frames, 1)
        rot_sum = float(self.rot_err_deg.sum())
        return {
            "RotErr": math.radians(rot_sum), "RotErr_deg": rot_sum, "TransErr": float(self.trans_err.sum()),
            "CamMC": float(self.cammc.sum()), "rot_err_deg_mean": rot_sum / T,
            "trans_err_mean": float(self.trans_err.sum()) / T, "cammc_mean": float(self.cammc.sum()) / T,
            "direction_cos": self.direction_cos, "frames": self.frames, "scale": self.scale, **self.extra,
        }

    def curves(self) -> dict[str, list[float]]:
        return {"rot_err_deg": self.rot_err_deg.tolist(), "trans_err": self.trans_err.tolist(),
                "cammc": self.cammc.tolist()}


def camera_errors(requested_c2w: Tensor, estimated_c2w: Tensor, scale: str = "max_norm") -> CameraErrors:
    """Compare an estimated camera path with the requested one, both ``[T, 4, 4]`` OpenCV c2w, frame by frame.

    Raises naming the argument when the shapes differ or a pose is not rigid.
    """
    gt = validate_c2w(torch.as_tensor(requested_c2w), name="requested_c2w")
    est = validate_c2w(torch.as_tensor(estimated_c2w), name="estimated_c2w")
    if gt.ndim != 3 or est.ndim != 3 or len(gt) < 1:
        raise ValueError(f"requested_c2w {tuple(gt.shape)} and estimated_c2w {tuple(est.shape)}: expected [T, 4, 4]")
    if len(gt) != len(est):
        raise ValueError(f"the requested trajectory has {len(gt)} poses but the video has {len(est)} estimated "
                         f"frames: give one pose per frame (trim the trajectory or the video)")
    gt, est = normalize_scale(relative_to_first(gt), relative_to_first(est), scale)
    rot = torch.rad2deg(rotation_angles(gt[:, :3, :3], est[:, :3, :3]))
    trans = (gt[:, :3, 3] - est[:, :3, 3]).norm(dim=-1)
    cammc = (gt[:, :3, :4] - est[:, :3, :4]).flatten(1).norm(dim=-1)
    return CameraErrors(rot, trans, cammc, direction_cosine(gt, est), scale)


def direction_cosine(gt: Tensor, est: Tensor, min_norm: float = 1e-6) -> float | None:
    """Cosine between the last camera positions of two relative paths (where the camera went), or None."""
    a, b = gt[-1, :3, 3], est[-1, :3, 3]
    if a.norm() < min_norm or b.norm() < min_norm:
        return None
    return float(torch.dot(a, b) / (a.norm() * b.norm()))


def average_summaries(summaries: list[dict[str, Any]]) -> dict[str, Any]:
    """The mean of several runs' :meth:`CameraErrors.summary` (numbers averaged, the rest from the first run)."""
    if not summaries:
        raise ValueError("no run to average: runs must be >= 1")
    out = dict(summaries[0])
    for key, value in out.items():
        values = [s[key] for s in summaries]
        if isinstance(value, float) and all(isinstance(v, float) for v in values):
            out[key] = sum(values) / len(values)
    out["runs"] = len(summaries)
    return out
