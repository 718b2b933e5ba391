"""Camera accuracy over an evaluation set, for ``realcam test`` and ``realcam predict``.

``CameraAccuracy`` estimates the camera path of every generated video, of its ground truth (the estimator's own
floor: what a perfect generator would score) and of its source video (the source-copy baseline), compares each
with the requested target path, and averages the per-video sums over videos. With the source given it also
counts matched pixels between each source frame and the generated (and ground-truth) frame of the same instant
(ReCamMaster's view synchronisation; ``realcam.eval.features.matched_pixels``). States are plain sums
(``dist_reduce_fx="sum"``), so it syncs across DDP ranks. Frames smaller than the estimator needs are counted,
not scored: the report then says ``unavailable: frames smaller than N px``.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric

from realcam.eval.camera import camera_errors
from realcam.eval.estimators import build_estimator
from realcam.eval.features import MIN_FRAME_SIZE, matched_pixels
from realcam.metrics import BASELINE, to_uint8_frames

SCORES = ("RotErr", "TransErr", "CamMC", "rot_err_deg_mean", "lost_frames")
VARIANTS = {"": "camera_", "gt_": "camera_gt_", "base_": BASELINE + "camera_"}     # state prefix -> report key


def unavailable(min_size: int, hw: tuple[int, int]) -> str:
    return f"unavailable: frames smaller than {min_size} px (got {hw[0]}x{hw[1]})"


def score_video(estimator: Any, frames: Tensor, K: Tensor, requested_c2w: Tensor, seed: int = 0,
                scale: str = "max_norm") -> dict[str, float]:
    """One video ``[T, 3, H, W]`` in [-1, 1] against its requested c2w ``[T, 4, 4]``: RotErr, TransErr, CamMC
    (sums over frames), mean RotErr per frame in degrees and the frames the estimator lost."""
    path = estimator(to_uint8_frames(frames), K, seed=seed)
    summary = camera_errors(requested_c2w, path.c2w, scale).summary()
    return {**{k: float(summary[k]) for k in SCORES[:4]}, "lost_frames": float(len(path.lost))}


class CameraAccuracy(Metric):
    """``update(generated, target_c2w, target_K, ground_truth=None, source=None)`` with videos ``[B, T, 3, H, W]``
    in [-1, 1], c2w ``[B, T, 4, 4]`` and K ``[B, T, 3, 3]`` (frame 0's is used); ``compute(prefix)`` -> flat dict.
    """

    is_differentiable = False
    higher_is_better = False
    full_state_update = False

    def __init__(self, estimator: str = "opencv", estimator_args: dict[str, Any] | None = None,
                 min_size: int = MIN_FRAME_SIZE, scale: str = "max_norm", **kwargs: Any):
        kwargs.setdefault("compute_with_cache", False)
        super().__init__(**kwargs)
        args = dict(estimator_args or {})
        if estimator == "opencv":
            args.setdefault("min_size", min_size)
        self.estimator = build_estimator(estimator, **args)
        self.min_size, self.scale = int(min_size), scale
        self.small_hw: tuple[int, int] | None = None
        for prefix in VARIANTS:
            for key in SCORES + (("matched_pixels", "matched_videos") if prefix != "base_" else ()):
                self.add_state(prefix + key, torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
            self.add_state(prefix + "videos", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("too_small", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, generated: Tensor, target_c2w: Tensor, target_K: Tensor, ground_truth: Tensor | None = None,
               source: Tensor | None = None) -> None:
        B, T, _, H, W = generated.shape
        if min(H, W) < self.min_size:
            self.too_small += B
            self.small_hw = (H, W)
            return
        for b in range(B):
            K, requested = target_K[b, 0].detach().double().cpu(), target_c2w[b].detach().double().cpu()
            for prefix, video in (("", generated), ("gt_", ground_truth), ("base_", source)):
                if video is None:
                    continue
                scores = score_video(self.estimator, video[b].detach().cpu(), K, requested, scale=self.scale)
                if source is not None and prefix != "base_":     # the source against itself would be trivial
                    pixels = matched_pixels(to_uint8_frames(source[b]), to_uint8_frames(video[b]))
                    scores.update(matched_pixels=sum(pixels) / len(pixels), matched_videos=1.0)
                for key, value in scores.items():
                    setattr(self, prefix + key, getattr(self, prefix + key) + value)
                setattr(self, prefix + "videos", getattr(self, prefix + "videos") + 1)

    def compute(self, prefix: str = "") -> dict[str, Any]:
        """Means over videos of each per-video score, or the reason there are none (``camera_unavailable``)."""
        out: dict[str, Any] = {}
        for state, key in VARIANTS.items():
            n = int(getattr(self, state + "videos"))
            if state and not n:                       # ground truth / source were never given
                continue
            out.update({key + s: (float(getattr(self, state + s)) / n if n else None) for s in SCORES})
            if state != "base_":
                m = int(getattr(self, state + "matched_videos"))
                out[key + "matched_pixels"] = float(getattr(self, state + "matched_pixels")) / m if m else None
        out["camera_videos"] = int(self.videos)
        if int(self.too_small):
            out["camera_unavailable"] = unavailable(self.min_size, self.small_hw or (0, 0)) + \
                f" for {int(self.too_small)} video(s)"
        return {prefix + k: v for k, v in out.items()}
