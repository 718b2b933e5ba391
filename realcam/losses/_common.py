"""Shared helpers of the loss functions: per-frame sigma, frame masks, masked MSE, seeded noise."""
from __future__ import annotations

import torch
from torch import Tensor

SIGMA_PER = ("sample", "frame")


def frame_sigma(sigma, x: Tensor, name: str = "sigma") -> Tensor:
    """sigma (a scalar, [B] or [B, F]) as the float32 [B, F] tensor the denoiser protocol promises."""
    sigma = torch.as_tensor(sigma, device=x.device)
    B, F = x.shape[:2]
    if sigma.ndim == 1:
        sigma = sigma[:, None]
    if sigma.ndim > 2 or any(s not in (1, n) for s, n in zip(sigma.shape, (B, F))):
        raise ValueError(f"{name} of shape {tuple(sigma.shape)} does not fit x {tuple(x.shape)}: "
                         f"expected a scalar, [B] or [B, F] = [{B}, {F}]")
    return sigma.to(torch.float32).expand(B, F)


def frame_mask(mask, x: Tensor, name: str = "mask") -> Tensor:
    """A per-frame mask [B, F] (bool or float weights) for x [B, F, ...], as float weights."""
    mask = torch.as_tensor(mask, device=x.device)
    if mask.shape != x.shape[:2]:
        raise ValueError(f"{name} of shape {tuple(mask.shape)} must be per frame, [B, F] = "
                         f"{list(x.shape[:2])} for x {tuple(x.shape)}")
    return mask.to(torch.promote_types(x.dtype, torch.float32))


def masked_mse(pred: Tensor, target: Tensor, weight: Tensor | None = None) -> Tensor:
    """Mean squared error over [B, F, ...], in at least float32.

    weight [B, F] selects (or weights) frames: the result is the mean over the elements of the
    selected frames, i.e. sum_bf w_bf mse_bf / sum_bf w_bf. All frames have the same element count,
    so for a bool mask this is exactly the MSE over the selected tokens. An all-zero mask gives 0
    (still attached to the graph, so a step that happens to have no noisy frame does not crash).
    """
    if pred.shape != target.shape:
        raise ValueError(f"prediction {tuple(pred.shape)} and target {tuple(target.shape)} must have one shape")
    work = torch.promote_types(pred.dtype, torch.float32)
    per_frame = (pred.to(work) - target.to(work)).square().reshape(*pred.shape[:2], -1).mean(-1)  # [B, F]
    if weight is None:
        return per_frame.mean()
    weight = weight.to(work)
    total = weight.sum()
    return (per_frame * weight).sum() / torch.where(total > 0, total, torch.ones_like(total))


def draw_sigma(schedule, x: Tensor, generator: torch.Generator | None, mode: str, sigma_range: tuple[float, float],
               sigma_per: str, caller: str) -> Tensor:
    """Training sigmas [B, F]: drawn per sample (shared by its frames) or per frame, shifted by the
    schedule, clamped to ``sigma_range``."""
    lo, hi = sigma_range
    if not 0 <= lo <= hi <= 1:
        raise ValueError(f"{caller}(sigma_range={tuple(sigma_range)}): expected 0 <= min <= max <= 1, "
                         f"e.g. (0.02, 0.98)")
    if sigma_per not in SIGMA_PER:
        raise ValueError(f"{caller}(sigma_per={sigma_per!r}): expected one of {', '.join(SIGMA_PER)}")
    B, F = x.shape[:2]
    shape = (B, 1) if sigma_per == "sample" else (B, F)
    sigma = schedule.sample_training_sigma(shape, mode=mode, generator=generator, shifted=True, clamp=(lo, hi))
    return sigma.to(x.device).expand(B, F)
