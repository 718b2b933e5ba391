"""Camera path estimators: a video (uint8 ``[T, H, W, 3]``) and its intrinsics ``K [3, 3]`` in, the camera path
relative to frame 0 out (``c2w [T, 4, 4]``, OpenCV, up to one unknown scale).

Registry ``CAMERA_ESTIMATORS`` (timm style): ``opencv`` (default; SIFT + essential matrix with known K, always
available with opencv-python-headless), ``pycolmap`` (COLMAP's incremental mapper through its Python package)
and ``glomap`` (the ``colmap`` and ``glomap`` executables, CamI2V's set-up). The last two are used only when
installed; otherwise they raise an error that says what to install. Third-party estimators register the same way
(``@CAMERA_ESTIMATORS.register("mine")``, from a ``realcam.plugins`` entry point).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor

from realcam.eval import features as F
from realcam.registry import Registry

CAMERA_ESTIMATORS: Registry = Registry("camera pose estimator")


@dataclass
class EstimatedPath:
    """``c2w [T, 4, 4]`` float64 relative to frame 0; ``valid [T]`` False where the estimator lost the frame
    (its pose then repeats the last valid one); ``info``: what the estimator found (inliers, model per frame)."""

    c2w: Tensor
    valid: Tensor
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def lost(self) -> list[int]:
        return [int(i) for i in torch.nonzero(~self.valid).flatten()]


def build_estimator(name: str = "opencv", **kwargs: Any) -> Callable[..., EstimatedPath]:
    """``CAMERA_ESTIMATORS.build`` with the name in the error: an unknown name lists the registered ones."""
    return CAMERA_ESTIMATORS.build(name, **kwargs)


def hold_lost(c2w: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Give every lost frame the pose of the last valid one before it (frame 0 is always valid)."""
    out = c2w.copy()
    for t in range(1, len(out)):
        if not valid[t]:
            out[t] = out[t - 1]
    return out


def _kabsch(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The rotation R minimising sum ||b_i - R a_i||^2 for unit vectors ``[N, 3]`` x2."""
    U, _, Vt = np.linalg.svd(b.T @ a)
    D = np.diag([1.0, 1.0, np.sign(np.linalg.det(U @ Vt))])
    return U @ D @ Vt


def _bearings(points: np.ndarray, K_inv: np.ndarray) -> np.ndarray:
    rays = np.c_[points, np.ones(len(points))] @ K_inv.T
    return rays / np.linalg.norm(rays, axis=1, keepdims=True)


# ================================================================================================ opencv
@CAMERA_ESTIMATORS.register("opencv")
class OpenCVEstimator:
    """Every frame against frame 0: SIFT matches, then either a pure rotation (when a rotation alone explains
    the matches to within ``parallax_px``: a pan has no measurable translation) or the essential matrix with known
    K (5-point RANSAC, ``cv2.recoverPose``). The per-frame translation directions get one common scale from the
    depths of the frame-0 points they triangulate (a depth seen with baseline b is d / b), chained from the frame
    with the most parallax. Deterministic for a given ``seed`` (RANSAC's)."""

    def __init__(self, max_features: int = 2000, ratio: float = 0.8, threshold_px: float = 1.0,
                 min_inliers: int = 15, parallax_px: float = 0.75, min_size: int = F.MIN_FRAME_SIZE,
                 method: str = 'USAC_ACCURATE'):
        self.method = method
        self.max_features, self.ratio, self.threshold_px = max_features, ratio, threshold_px
        self.min_inliers, self.parallax_px, self.min_size = min_inliers, parallax_px, min_size

    def __call__(self, frames: Any, K: Tensor, seed: int = 0) -> EstimatedPath:
        cv2 = F.cv2_module()
        frames = [F.as_uint8(f, f"frames[{i}]") for i, f in enumerate(frames)]
        if not frames:
            raise ValueError("the video has no frames")
        F.check_size(*frames[0].shape[:2], self.min_size)
        K = np.asarray(torch.as_tensor(K, dtype=torch.float64))
        K_inv = np.linalg.inv(K)
        feats = [F.detect(f, self.max_features) for f in frames]
        T = len(frames)
        R_all, t_all = np.tile(np.eye(3), (T, 1, 1)), np.zeros((T, 3))
        valid, parallax, depths = np.ones(T, bool), np.zeros(T), {}
        per_frame: list[dict[str, Any]] = [{"model": "reference", "inliers": len(feats[0])}]
        for t in range(1, T):
            cv2.setRNGSeed(seed * 100003 + t)
            found = self._pair(feats[0], feats[t], K, K_inv)
            per_frame.append({k: v for k, v in found.items() if k in ("model", "inliers", "parallax_px")})
            if found["model"] == "lost":
                valid[t] = False
                continue
            R_all[t], t_all[t], parallax[t] = found["R"], found["t"], found["parallax_px"]
            if found["model"] == "essential":
                depths[t] = found["depths"]
        scales = _chain_scales(depths, parallax)
        for t in depths:
            if t in scales:
                t_all[t] *= scales[t]
            else:
                valid[t] = False
                per_frame[t]["model"] = "lost (no shared points for its scale)"
        c2w = np.tile(np.eye(4), (T, 1, 1))
        c2w[:, :3, :3] = R_all.transpose(0, 2, 1)                      # (x_t = R x_0 + t) -> camera-to-frame-0
        c2w[:, :3, 3] = -np.einsum("tji,tj->ti", R_all, t_all)
        c2w = hold_lost(c2w, valid)
        return EstimatedPath(torch.from_numpy(c2w), torch.from_numpy(valid),
                             {"estimator": "opencv", "seed": seed, "frames": per_frame})

    def _pair(self, f0: F.Features, ft: F.Features, K: np.ndarray, K_inv: np.ndarray) -> dict[str, Any]:
        cv2 = F.cv2_module()
        pairs = F.match(f0, ft, self.ratio)
        if len(pairs) < self.min_inliers:
            return {"model": "lost", "inliers": len(pairs)}
        p0, pt = f0.points[pairs[:, 0]], ft.points[pairs[:, 1]]
        # a pure rotation maps bearings to bearings: fit it on the homography's inliers, measure what it leaves
        _, h_mask = cv2.findHomography(p0, pt, cv2.RANSAC, self.threshold_px)
        h_in = h_mask.ravel().astype(bool) if h_mask is not None else np.ones(len(p0), bool)
        b0, bt = _bearings(p0, K_inv), _bearings(pt, K_inv)
        R_rot = _kabsch(b0[h_in], bt[h_in])
        E, e_mask = cv2.findEssentialMat(p0, pt, K, getattr(cv2, self.method), 0.999, self.threshold_px)
        if E is None or e_mask is None or int(e_mask.sum()) < self.min_inliers:
            return self._rotation(R_rot, h_in, p0, pt, b0, K, force=True)
        e_in = e_mask.ravel().astype(bool)
        residual = _reprojection(R_rot, b0[e_in], pt[e_in], K)
        if np.median(residual) < self.parallax_px:
            return self._rotation(R_rot, h_in, p0, pt, b0, K)
        _, R, t, pose_mask = cv2.recoverPose(E[:3], p0, pt, K, mask=e_mask.copy())
        inl = pose_mask.ravel() > 0
        if int(inl.sum()) < self.min_inliers:
            return {"model": "lost", "inliers": int(inl.sum())}
        t = t.ravel() / (np.linalg.norm(t) + 1e-12)
        X = cv2.triangulatePoints(K @ np.eye(3, 4), K @ np.c_[R, t], p0[inl].T, pt[inl].T)
        z = X[2] / X[3]
        keep = np.isfinite(z) & (z > 0)
        return {"model": "essential", "inliers": int(inl.sum()), "R": R, "t": t,
                "parallax_px": float(np.median(residual)),
                "depths": dict(zip(pairs[inl, 0][keep].tolist(), z[keep].tolist()))}

    def _rotation(self, R: np.ndarray, h_in: np.ndarray, p0, pt, b0, K, force: bool = False) -> dict[str, Any]:
        if int(h_in.sum()) < self.min_inliers:
            return {"model": "lost", "inliers": int(h_in.sum())}
        residual = _reprojection(R, b0[h_in], pt[h_in], K)
        return {"model": "rotation" if not force else "rotation (no essential matrix)", "inliers": int(h_in.sum()),
                "R": R, "t": np.zeros(3), "parallax_px": float(np.median(residual))}


def _reprojection(R: np.ndarray, b0: np.ndarray, pt: np.ndarray, K: np.ndarray) -> np.ndarray:
    """Pixel distance between ``pt`` and frame-0 bearings ``b0`` rotated by R and projected with K."""
    x = (b0 @ R.T) @ K.T
    return np.linalg.norm(x[:, :2] / x[:, 2:3] - pt, axis=1)


def _chain_scales(depths: dict[int, dict[int, float]], parallax: np.ndarray, min_shared: int = 5) -> dict[int, float]:
    """One scale per translating frame: the frame with the most parallax gets 1; every other frame t gets
    ``s_u * median(z_u / z_t)`` from the already scaled frame u it shares the most frame-0 points with."""
    if not depths:
        return {}
    ref = max(depths, key=lambda t: parallax[t])
    scales = {ref: 1.0}
    pending = set(depths) - {ref}
    while pending:
        best = None
        for t in pending:
            for u in scales:
                shared = depths[t].keys() & depths[u].keys()
                if len(shared) >= min_shared and (best is None or len(shared) > best[2]):
                    best = (t, u, len(shared))
        if best is None:
            break
        t, u, _ = best
        shared = depths[t].keys() & depths[u].keys()
        scales[t] = scales[u] * float(np.median([depths[u][k] / depths[t][k] for k in shared]))
        pending.discard(t)
    return scales
