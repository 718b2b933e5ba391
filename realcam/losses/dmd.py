"""Distribution Matching Distillation: the generator's DMD loss and the critic's denoising loss.

DESIGN §2 (Self-Forcing DMD). For a student sample x [B, F, C, h, w]:
  sigma ~ U(0, 1), shifted by the schedule, clamped to [0.02, 0.98]; x_t = (1 - sigma) x + sigma eps;
  real = x0 from the frozen teacher with guidance u + g (c - u); fake = x0 from the critic, no guidance;
  grad = (fake - real) / mean|x - real|   (mean per sample over F, C, h, w), then nan_to_num;
  loss = 0.5 ||x - sg(x - grad)||^2 in float64, whose gradient w.r.t. x is grad (up to the reduction).
By Tweedie, E[x0 | x_t] = (x_t + sigma^2 score(x_t)) / (1 - sigma), so for ideal scores
fake - real = sigma^2 / (1 - sigma) (score_fake - score_real): descending the loss (x <- x - lr grad)
moves the generator's samples toward the real distribution and away from the one the critic has fitted.
The normalization makes the step invariant to a common scale of x - real and fake - real (the data's scale).
"""
from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from realcam.losses._common import draw_sigma, frame_sigma
from realcam.losses.flow_matching import flow_matching_loss
from realcam.modules.flow import FlowSchedule, sample_noise
from realcam.modules.samplers import Denoiser, predict_x0

Reduction = Literal["mean", "sum"]


def dmd_gradient(x: Tensor, real_x0: Tensor, fake_x0: Tensor) -> Tensor:
    """grad = (fake_x0 - real_x0) / mean|x - real_x0|, in float64, detached.

    x, real_x0, fake_x0: [B, F, C, h, w] (any [B, ...]); the mean runs per sample over all other dims.
    A sample with x == real_x0 exactly has a zero denominator: its 0/0 (nan) and d/0 (+-inf) entries
    become 0. torch.nan_to_num's default would map inf to the float64 maximum, whose square overflows
    the loss and whose norm turns gradient clipping into nan; "no usable direction" is 0.
    """
    if not x.shape == real_x0.shape == fake_x0.shape:
        raise ValueError(f"dmd_gradient: x {tuple(x.shape)}, real_x0 {tuple(real_x0.shape)} and fake_x0 "
                         f"{tuple(fake_x0.shape)} must have one shape [B, F, C, h, w]")
    x, real, fake = (t.detach().double() for t in (x, real_x0, fake_x0))
    normalizer = (x - real).abs().mean(dim=tuple(range(1, x.ndim)), keepdim=True)  # [B, 1, 1, 1, 1]
    return torch.nan_to_num((fake - real) / normalizer, nan=0.0, posinf=0.0, neginf=0.0)


def _surrogate(x: Tensor, grad: Tensor, reduction: Reduction) -> Tensor:
    """0.5 ||x - sg(x - grad)||^2 in float64: its gradient is grad (sum) or grad / x.numel() (mean)."""
    if reduction not in ("mean", "sum"):
        raise ValueError(f"dmd_loss(reduction={reduction!r}): expected 'mean' or 'sum'")
    x64 = x.double()
    se = (x64 - (x64 - grad).detach()).square()
    return 0.5 * (se.mean() if reduction == "mean" else se.sum())


def dmd_loss(x: Tensor, real_x0: Tensor, fake_x0: Tensor, reduction: Reduction = "mean") -> Tensor:
    """The DMD surrogate loss, a float64 scalar whose gradient w.r.t. x is :func:`dmd_gradient`.

    reduction "mean" (default, as in Self Forcing's mse_loss): 0.5 mean((x - sg(x - grad))^2), so
    d loss / d x = grad / x.numel(); "sum": 0.5 sum(...), so d loss / d x = grad exactly.
    The loss value is 0.5 mean(grad^2), a magnitude to log, not a quantity that decreases.
    """
    return _surrogate(x, dmd_gradient(x, real_x0, fake_x0), reduction)


def dmd_generator_loss(x: Tensor, real_score: Denoiser, fake_score: Denoiser, cond, uncond,
                       schedule: FlowSchedule, guidance: float, generator: torch.Generator | None,
                       sigma_range: tuple[float, float] = (0.02, 0.98),
                       sigma_per: Literal["sample", "frame"] = "sample", sigma: Tensor | None = None,
                       reduction: Reduction = "mean") -> tuple[Tensor, dict[str, Tensor]]:
    """DMD loss of a student sample x [B, F, C, h, w] (carrying the generator's graph).

    real_score: the frozen teacher, called as ``u + g (c - u)`` with ``cond`` / ``uncond`` and
        ``guidance`` g (g = 1 or uncond None: one conditional call).
    fake_score: the critic, called with ``cond`` and no guidance.
    sigma: drawn from ``generator`` as U(0, 1), shifted by ``schedule``, clamped to ``sigma_range``;
        one per sample (``sigma_per="sample"``, shared by its frames) or one per frame. Pass ``sigma``
        (scalar, [B] or [B, F]) to choose it yourself, e.g. one per chunk.
    Both scores run under no_grad on x_t built from x.detach(): the only path to the generator is the
    surrogate's x. Returns (loss, logs); logs are detached scalars: sigma_mean, grad_norm (L2 norm of
    grad over the whole batch), grad_abs_mean, normalizer_mean (mean|x - real|), real_fake_gap
    (mean|fake - real|).
    """
    if sigma is None:
        sigma = draw_sigma(schedule, x, generator, "uniform", sigma_range, sigma_per, "dmd_generator_loss")
    else:
        sigma = frame_sigma(sigma, x)
    noise = sample_noise(x.shape, generator, x)
    with torch.no_grad():
        x_t = schedule.add_noise(x.detach(), noise, sigma)
        real_x0 = predict_x0(real_score, x_t, sigma, cond, guidance=guidance, uncond=uncond)
        fake_x0 = predict_x0(fake_score, x_t, sigma, cond)
    grad = dmd_gradient(x, real_x0, fake_x0)
    loss = _surrogate(x, grad, reduction)
    with torch.no_grad():
        real64 = real_x0.double()
        logs = {
            "sigma_mean": sigma.mean(),
            "grad_norm": grad.norm(),
            "grad_abs_mean": grad.abs().mean(),
            "normalizer_mean": (x.detach().double() - real64).abs().mean(),
            "real_fake_gap": (fake_x0.double() - real64).abs().mean(),
        }
    return loss, {k: v.float() for k, v in logs.items()}


def critic_loss(critic: Denoiser, x_student_detached: Tensor, cond, schedule: FlowSchedule,
                generator: torch.Generator | None, sigma_range: tuple[float, float] = (0.02, 0.98),
                sigma_mode: Literal["uniform", "logit_normal"] = "uniform",
                sigma_per: Literal["sample", "frame"] = "sample",
                mask: Tensor | None = None) -> tuple[Tensor, dict[str, Tensor]]:
    """Flow-matching loss of the critic (fake score) on a student sample [B, F, C, h, w].

    The sample is detached here as well, so no critic step can reach the generator. sigma is drawn
    like the generator step's (shifted ``sigma_mode`` noise, clamped to ``sigma_range``) so the critic
    is fitted where the DMD step queries it. mask: optional [B, F] of frames that count.
    Returns (loss, logs) with logs ``sigma_mean``.
    """
    x0 = x_student_detached.detach()
    sigma = draw_sigma(schedule, x0, generator, sigma_mode, sigma_range, sigma_per, "critic_loss")
    noise = sample_noise(x0.shape, generator, x0)
    loss = flow_matching_loss(critic, x0, cond, schedule, sigma, noise, mask)
    return loss, {"sigma_mean": sigma.mean().detach()}
