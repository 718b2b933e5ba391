"""A direct signal for the reprojection blend's choice of depth.

The blend (:meth:`realcam.modules.reproject.SourceReprojection.blend`) mixes the source warped at D depths with
the generated x0. The flow loss trains its weights only through that mixture, and a softmax mixture under a
squared error learns slowly which component is right: the gradient on a component's logit scales with its
current weight, so small weights stay small and the mix stays soft. During training the true target is known,
so the right depth is too: at every fine pixel, the depths whose warped sample matches the target. This loss
is the cross-entropy between that soft choice and the blend's distribution over the valid depths.

Pixels where no depth matches (disoccluded, outside the source view, a dropped camera) do not count: there
the generated x0 is the right answer, which the flow loss already teaches.
"""
from __future__ import annotations

import torch
from torch import Tensor

from realcam.modules.reproject import SourceReprojection


def depth_choice_targets(errors: Tensor, temperature: float, max_error: float) -> tuple[Tensor, Tensor]:
    """Soft target over depths from per-depth errors [..., D, H, W] (``inf`` = invalid).

    Returns (p [..., D, H, W] = softmax(-error / temperature) over the valid depths, counted [..., H, W]: pixels
    whose best depth is within ``max_error``).
    """
    if not temperature > 0:
        raise ValueError(f"blend_temperature={temperature} must be > 0 (a squared error scale, e.g. 0.005)")
    best = errors.min(-3).values
    counted = best <= max_error
    logits = -(errors - torch.where(counted, best, torch.zeros_like(best)).unsqueeze(-3)) / temperature
    p = torch.softmax(torch.where(counted.unsqueeze(-3), logits, torch.zeros_like(logits)), dim=-3)
    return torch.where(torch.isfinite(errors), p, torch.zeros_like(p)), counted


def blend_selection_loss(reproject: SourceReprojection, logits: Tensor, warp: tuple[Tensor, Tensor], x0: Tensor,
                         temperature: float = 0.005, max_error: float = 0.02) -> Tensor:
    """Cross-entropy between the depths that reproduce the true x0 and the blend's weights over valid depths.

    logits [B, F, (D + 1) f^2, h, w] and warp as the backbone's blend gets them, x0 [B, F, C, h, w] the clean
    target latents. Squared errors are in latent units per fine pixel (codec range [-1, 1]). Returns a float32
    scalar, 0 (with a graph) when no pixel counts.
    """
    errors = reproject.depth_errors(x0, warp)
    with torch.no_grad():
        p, counted = depth_choice_targets(errors, temperature, max_error)
    valid = warp[1]
    lg = reproject.depth_logits(logits).masked_fill(~valid, float("-inf"))
    lg = torch.where(valid.any(2, keepdim=True), lg, torch.zeros_like(lg))   # no valid depth: finite, not counted
    logq = torch.log_softmax(lg, dim=2)
    ce = -(p * torch.where(valid, logq, torch.zeros_like(logq))).sum(2)     # [B, F, H, W]
    weight = counted.float()
    return (ce * weight).sum() / weight.sum().clamp(min=1.0)
