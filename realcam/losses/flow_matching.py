"""Rectified-flow matching: the denoising loss of the teacher and of the DMD critic.

x_sigma = (1 - sigma) x0 + sigma eps and the network regresses the flow v = eps - x0 (DESIGN §2).
The denoiser sees only the target latents ``x`` [B, F, C, h, w]; clean source tokens travel in
``cond``, so "target tokens only" means every element of ``x``, optionally narrowed per frame.
"""
from __future__ import annotations

from torch import Tensor

from realcam.losses._common import frame_mask, frame_sigma, masked_mse
from realcam.modules.flow import FlowSchedule
from realcam.modules.samplers import Denoiser

WEIGHTINGS = ("flow", "x0")


def flow_matching_loss(denoiser: Denoiser, x0: Tensor, cond, schedule: FlowSchedule, sigma, noise: Tensor,
                       mask: Tensor | None = None, weighting: str = "flow") -> Tensor:
    """MSE between ``denoiser(x_sigma, sigma, cond)`` and v = eps - x0.

    x0, noise: [B, F, C, h, w]. sigma: scalar, [B] or [B, F] (the denoiser always gets [B, F]).
    mask: optional [B, F] (bool or float weights) of the frames that count, e.g. ``sigma > 0`` so
        clean frames, whose flow is undefined, do not; None counts every frame.
    weighting: ``flow`` (the plain flow MSE) or ``x0``: each frame's flow MSE times sigma^2, which is the MSE
        of the implied x0 estimate x0 = x - sigma v. The flow MSE weights a frame's x0 error by 1 / sigma^2, so
        nearly clean frames dominate; ``x0`` gives every noise level the same weight on the clean image.
    Returns the mean over the elements of the counted frames (float32 or wider).
    """
    if weighting not in WEIGHTINGS:
        raise ValueError(f"weighting={weighting!r}: choose 'flow' (plain flow MSE) or 'x0' (sigma^2-weighted, "
                         f"the x0 estimate's MSE)")
    if noise.shape != x0.shape:
        raise ValueError(f"flow_matching_loss: noise {tuple(noise.shape)} must have x0's shape {tuple(x0.shape)}")
    sigma = frame_sigma(sigma, x0)
    x = schedule.add_noise(x0, noise, sigma)
    flow = denoiser(x, sigma, cond)
    target = schedule.flow_matching_target(x0, noise)
    if weighting == "x0":      # sigma^2 (v_hat - v)^2 = (x0_hat - x0)^2: scale both sides by sigma per frame
        scale = sigma.view(*sigma.shape, *[1] * (x0.dim() - 2))
        flow, target = flow * scale, target * scale
    return masked_mse(flow, target.detach(), None if mask is None else frame_mask(mask, x0))
