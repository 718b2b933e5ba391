"""Local features with OpenCV (SIFT + Lowe's ratio test), shared by the ``opencv`` camera estimator and the
matched-pixel count between a source and a generated frame (ReCamMaster's "Mat. Pix.", docs/metrics.md).

Frames are uint8 ``[H, W, 3]`` RGB (numpy or torch). OpenCV is imported here only, so ``import realcam`` never
needs it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

MIN_FRAME_SIZE = 96     # below this (shorter side, px) SIFT finds too few stable features to estimate a camera
MIN_MATCHES = 8


def cv2_module() -> Any:
    try:
        import cv2
    except ImportError as e:
        raise ImportError(f"camera metrics need OpenCV ({e}): pip install opencv-python-headless") from None
    return cv2


def as_uint8(frame: Any, name: str = "frame") -> np.ndarray:
    """A torch or numpy uint8 ``[H, W, 3]`` frame as a contiguous numpy array."""
    x = frame.numpy() if hasattr(frame, "numpy") else np.asarray(frame)
    if x.dtype != np.uint8 or x.ndim != 3 or x.shape[-1] != 3:
        raise ValueError(f"{name} is {x.dtype} {tuple(x.shape)}: expected uint8 [H, W, 3] RGB")
    return np.ascontiguousarray(x)


def check_size(height: int, width: int, min_size: int = MIN_FRAME_SIZE, what: str = "the video") -> None:
    if min(height, width) < min_size:
        raise ValueError(f"{what} is {height}x{width} px: camera estimation needs frames of at least {min_size} px "
                         f"on the shorter side (features do not exist below that); use a larger video")


@dataclass
class Features:
    """Keypoints ``[N, 2]`` as (u, v) in realcam's pixel convention (pixel (i, j) has its centre at
    (j + 0.5, i + 0.5), as K expects) and SIFT descriptors ``[N, 128]``."""

    points: np.ndarray
    descriptors: np.ndarray | None

    def __len__(self) -> int:
        return len(self.points)


def detect(frame: Any, max_features: int = 2000, contrast: float = 0.01) -> Features:
    """SIFT keypoints of one RGB uint8 frame (at most ``max_features``, strongest first)."""
    cv2 = cv2_module()
    gray = cv2.cvtColor(as_uint8(frame), cv2.COLOR_RGB2GRAY)
    keypoints, desc = cv2.SIFT_create(nfeatures=max_features, contrastThreshold=contrast).detectAndCompute(gray, None)
    # OpenCV puts pixel centres at integers; realcam's K puts them at +0.5 (docs/conventions.md)
    points = np.array([k.pt for k in keypoints], dtype=np.float64).reshape(-1, 2) + 0.5
    return Features(points, desc)


def match(a: Features, b: Features, ratio: float = 0.8) -> np.ndarray:
    """Index pairs ``[M, 2]`` (into ``a``, into ``b``) passing Lowe's ratio test, each ``b`` point used once."""
    if a.descriptors is None or b.descriptors is None or len(a) < 2 or len(b) < 2:
        return np.zeros((0, 2), dtype=np.int64)
    cv2 = cv2_module()
    knn = cv2.BFMatcher(cv2.NORM_L2).knnMatch(a.descriptors, b.descriptors, k=2)
    pairs, used = [], set()
    for m in sorted((m for m in knn if len(m) == 2 and m[0].distance < ratio * m[1].distance),
                    key=lambda m: m[0].distance):
        if m[0].trainIdx not in used:
            used.add(m[0].trainIdx)
            pairs.append((m[0].queryIdx, m[0].trainIdx))
    return np.array(pairs, dtype=np.int64).reshape(-1, 2)


def epipolar_inliers(pa: np.ndarray, pb: np.ndarray, threshold_px: float = 1.0) -> np.ndarray:
    """bool ``[M]``: matches consistent with one fundamental matrix (RANSAC), i.e. with some rigid camera motion."""
    if len(pa) < MIN_MATCHES:
        return np.zeros(len(pa), dtype=bool)
    cv2 = cv2_module()
    _, mask = cv2.findFundamentalMat(pa, pb, cv2.FM_RANSAC, threshold_px, 0.999)
    return np.zeros(len(pa), dtype=bool) if mask is None else mask.ravel().astype(bool)


def matched_pixels(source: Any, generated: Any, max_features: int = 2000, threshold_px: float = 1.0,
                   seed: int = 0) -> list[int]:
    """Per frame, the number of source/generated correspondences that survive the ratio test and a RANSAC
    fundamental matrix: uint8 videos ``[T, H, W, 3]`` x2 -> ``[T]`` counts (higher: better synchronised views)."""
    cv2 = cv2_module()
    if len(source) != len(generated):
        raise ValueError(f"source has {len(source)} frames but generated has {len(generated)}: give the same frames")
    counts = []
    for t, (s, g) in enumerate(zip(source, generated)):
        cv2.setRNGSeed(seed + t)
        fa, fb = detect(s, max_features), detect(g, max_features)
        pairs = match(fa, fb)
        counts.append(int(epipolar_inliers(fa.points[pairs[:, 0]], fb.points[pairs[:, 1]], threshold_px).sum()))
    return counts
