"""Samplers: free functions over the denoiser protocol, k-diffusion style.

A denoiser is any callable ``denoiser(x [B, F, C, h, w], sigma [B, F], cond) -> flow`` predicting
the rectified flow v = eps - x0 (see :mod:`realcam.modules.flow`). ``cond`` is opaque here: the
samplers only pass it through, so wrappers (KV caches, camera conditions) stay the caller's business.

``sigmas`` is a descending 1-D tensor, one entry per step (e.g. ``FlowSchedule.teacher_sigmas(50)``
or ``FlowSchedule.student_sigmas()``); an entry may instead be [B] or [B, F] for per-frame sigmas.
The samplers run under ``torch.no_grad``; training code that needs a gradient through one step
(self-rollout) calls :func:`predict_x0` itself.
"""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor

from realcam.modules.flow import x0_from_flow

Denoiser = Callable[[Tensor, Tensor, Any], Tensor]


def _sigma_map(sigma: Tensor, x: Tensor) -> Tensor:
    """One step's sigma (scalar, [B] or [B, F]) as the [B, F] tensor the protocol promises."""
    sigma = sigma.to(device=x.device, dtype=torch.float32)
    if sigma.ndim == 1:
        sigma = sigma[:, None]
    return sigma.expand(x.shape[0], x.shape[1])


def _check_sigmas(sigmas: Tensor, noise: Tensor, name: str) -> Tensor:
    sigmas = torch.as_tensor(sigmas)
    if noise.ndim < 2:
        raise ValueError(f"{name}: noise must be [B, F, ...] (latents [B, F, C, h, w]), got {tuple(noise.shape)}")
    if sigmas.ndim == 0 or len(sigmas) == 0:
        raise ValueError(f"{name}: sigmas must be a non-empty descending sequence, got {sigmas}")
    return sigmas


def guided_flow(denoiser: Denoiser, x: Tensor, sigma: Tensor, cond, guidance: float = 1.0,
                uncond=None) -> Tensor:
    """u + g (c - u): g = 1 (or no ``uncond``) is the plain conditional flow with one call.

    Self Forcing writes guidance as c + g (c - u); that is this formula at scale g + 1.
    """
    if guidance == 1.0 or uncond is None:
        return denoiser(x, sigma, cond)
    c = denoiser(x, sigma, cond)
    u = denoiser(x, sigma, uncond)
    return u + guidance * (c - u)


def predict_x0(denoiser: Denoiser, x: Tensor, sigma: Tensor, cond, guidance: float = 1.0,
               uncond=None) -> Tensor:
    """One network call turned into a clean estimate: x0 = x - sigma v (in float64, cast back)."""
    sigma = _sigma_map(torch.as_tensor(sigma), x)
    return x0_from_flow(x, guided_flow(denoiser, x, sigma, cond, guidance, uncond), sigma)


@torch.no_grad()
def euler_sample(denoiser: Denoiser, noise: Tensor, cond, sigmas: Tensor, guidance: float = 1.0,
                 uncond=None, progress: bool = False) -> Tensor:
    """Integrate the flow ODE from ``noise`` (the state at sigmas[0]) down to sigmas[-1].

    Euler: x_{i+1} = x_i + (sigma_{i+1} - sigma_i) v_i with v = u + g (c - u) (see :func:`guided_flow`).
    Pass sigmas ending at 0 (``teacher_sigmas``) to get a clean sample. noise [B, F, C, h, w].
    """
    sigmas = _check_sigmas(sigmas, noise, "euler_sample")
    # Accumulate in float32 at least: 50 bf16 additions would round away the small late steps.
    x = noise.to(torch.promote_types(noise.dtype, torch.float32))
    steps = range(len(sigmas) - 1)
    if progress:
        from tqdm.auto import tqdm

        steps = tqdm(steps, desc="euler", leave=False)
    for i in steps:
        sigma, sigma_next = _sigma_map(sigmas[i], x), _sigma_map(sigmas[i + 1], x)
        flow = guided_flow(denoiser, x.to(noise.dtype), sigma, cond, guidance, uncond).to(x.dtype)
        x = x + (sigma_next - sigma).reshape(*sigma.shape, *(1,) * (x.ndim - 2)) * flow
    return x.to(noise.dtype)
