"""ODE regression (CausVid ODE init): the student's one-step x0 regressed onto the teacher's sample.

The ODE pairs hold teacher states x_t at exactly the student's warped sigmas (one FlowSchedule for
data, regression, DMD and inference) and the teacher's final x0. Each chunk carries its own random
step, so sigma is per frame; clean frames (sigma = 0) carry no regression signal and are left out.
"""
from __future__ import annotations

from torch import Tensor

from realcam.losses._common import frame_mask, frame_sigma, masked_mse
from realcam.modules.samplers import Denoiser, predict_x0


def ode_regression_loss(student: Denoiser, x_t: Tensor, sigma, cond, x0_target: Tensor,
                        mask: Tensor | None = None) -> Tensor:
    """MSE between ``predict_x0(student, x_t, sigma, cond)`` and ``x0_target`` on noisy frames.

    x_t, x0_target: [B, F, C, h, w]. sigma: scalar, [B] or [B, F].
    mask: optional [B, F] further restricting (or weighting) frames; frames with sigma == 0 never
        count, with or without it (at sigma = 0 the x0 estimate is x_t itself, whatever the student says).
    Returns the mean over the elements of the counted frames; 0 (attached to the graph) if none counts.
    """
    if x0_target.shape != x_t.shape:
        raise ValueError(f"ode_regression_loss: x0_target {tuple(x0_target.shape)} must have x_t's shape "
                         f"{tuple(x_t.shape)}")
    sigma = frame_sigma(sigma, x_t)
    weight = (sigma > 0).float()
    if mask is not None:
        weight = weight * frame_mask(mask, x_t)
    x0 = predict_x0(student, x_t, sigma, cond)
    return masked_mse(x0, x0_target.detach(), weight)
