"""Rectified-flow schedule: noising, timestep shift, the student's few steps and x0 <-> flow.

Conventions (DESIGN §2): x_sigma = (1 - sigma) x0 + sigma eps, the network predicts the flow
v = eps - x0, so x0 = x - sigma v. sigma = 1 is pure noise, sigma = 0 is clean data. The shift
sigma' = s sigma / (1 + (s - 1) sigma) spends more steps at high noise (Wan uses s = 5).

One :class:`FlowSchedule` is shared by ODE data, ODE regression, DMD and inference, so they all use
one shift and one step list (mixing them is a known pitfall).

sigma broadcasts over the leading dims of x: a scalar, [B] or [B, F] for latents [B, F, C, h, w]
(or [B, N] for tokens [B, N, D]).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor

SIGMA_MODES = ("logit_normal", "uniform")


def _as_tensor(sigma, like: Tensor | None = None) -> Tensor:
    if isinstance(sigma, Tensor):
        return sigma
    return torch.as_tensor(sigma, dtype=torch.float32, device=None if like is None else like.device)


def expand_sigma(sigma, x: Tensor) -> Tensor:
    """Reshape sigma (scalar, [B], [B, F], ...) to broadcast over x's trailing dims."""
    sigma = _as_tensor(sigma, x).to(x.device)
    if sigma.ndim > x.ndim or any(s not in (1, n) for s, n in zip(sigma.shape, x.shape)):
        raise ValueError(f"sigma of shape {tuple(sigma.shape)} does not match the leading dims of x "
                         f"{tuple(x.shape)}: expected a scalar, [B] or [B, F] for x [B, F, C, h, w]")
    return sigma.reshape(*sigma.shape, *(1,) * (x.ndim - sigma.ndim))


def flow_matching_target(x0: Tensor, noise: Tensor) -> Tensor:
    """The flow the network should predict for any sigma: v = eps - x0."""
    return noise - x0


Generators = torch.Generator | Sequence[torch.Generator] | None


def draw(fn, shape, generator: Generators, **kw) -> Tensor:
    """``fn(shape, generator=generator, **kw)`` (torch.randn / torch.rand), on the generator's device; given one
    generator per row (a sequence as long as ``shape[0]``), row b is drawn from generator b alone, so a sample's
    draw does not depend on the batch it shares (data-parallel runs draw what one process draws)."""
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    if generator is None or isinstance(generator, torch.Generator):
        device = kw.pop("device", None) or (None if generator is None else generator.device)
        return fn(shape, generator=generator, device=device, **kw)
    if len(generator) != shape[0]:
        raise ValueError(f"{len(generator)} generators for a draw of shape {shape}: give one per row")
    kw.pop("device", None)
    return torch.stack([fn(shape[1:], generator=g, device=g.device, **kw) for g in generator])


def sample_noise(shape, generator: Generators, like: Tensor) -> Tensor:
    """Standard normal noise of ``shape`` drawn from ``generator`` (on its device, in float32, so the draw does
    not depend on the target device or dtype), returned on ``like``'s device and dtype. One generator per row
    is allowed (:func:`draw`)."""
    device = like.device if generator is None else None
    eps = draw(torch.randn, shape, generator, device=device, dtype=torch.float32)
    return eps.to(device=like.device, dtype=like.dtype)


def add_noise(x0: Tensor, noise: Tensor, sigma) -> Tensor:
    """x_sigma = (1 - sigma) x0 + sigma eps, computed in at least float32, returned in x0's dtype."""
    work = torch.promote_types(x0.dtype, torch.float32)
    s = expand_sigma(sigma, x0).to(work)
    return ((1 - s) * x0.to(work) + s * noise.to(work)).to(x0.dtype)


def x0_from_flow(x: Tensor, flow: Tensor, sigma) -> Tensor:
    """x0 = x - sigma v, in float64 (DMD and consistency steps subtract nearly equal numbers)."""
    s = expand_sigma(sigma, x).double()
    return (x.double() - s * flow.double()).to(x.dtype)


def flow_from_x0(x: Tensor, x0: Tensor, sigma) -> Tensor:
    """v = (x - x0) / sigma, in float64. Where sigma = 0 (clean source tokens) every flow is consistent
    with x = x0, so those entries get flow 0 instead of 0/0 = nan."""
    s = expand_sigma(sigma, x).double()
    delta = x.double() - x0.double()
    flow = torch.where(s > 0, delta / torch.where(s > 0, s, torch.ones_like(s)), torch.zeros_like(delta))
    return flow.to(x.dtype)


def shift_sigma(sigma, shift: float) -> Tensor:
    """sigma' = s sigma / (1 + (s - 1) sigma); maps [0, 1] onto itself, s > 1 pushes toward noise."""
    sigma = _as_tensor(sigma)
    return shift * sigma / (1 + (shift - 1) * sigma)


@dataclass
class FlowSchedule:
    """Timestep schedule for rectified flow.

    shift: timestep shift s (> 0; 1 = no shift). Wan uses 5.
    denoising_steps: the student's steps as integer timesteps, strictly descending in
        (0, num_train_timesteps]; sigma = step / num_train_timesteps before the shift.
    num_train_timesteps: the integer timestep scale (1000).
    """

    shift: float = 5.0
    denoising_steps: tuple[int, ...] = (1000, 750, 500, 250)
    num_train_timesteps: int = 1000

    def __post_init__(self) -> None:
        if not (isinstance(self.shift, (int, float)) and math.isfinite(self.shift) and self.shift > 0):
            raise ValueError(f"FlowSchedule.shift = {self.shift!r} must be a finite number > 0 (Wan uses 5.0)")
        if not isinstance(self.num_train_timesteps, int) or self.num_train_timesteps <= 0:
            raise ValueError(f"FlowSchedule.num_train_timesteps = {self.num_train_timesteps!r} must be an int > 0")
        steps = tuple(self.denoising_steps)  # YAML gives a list; keep one canonical type
        if not steps:
            raise ValueError("FlowSchedule.denoising_steps is empty: give the student's timesteps, "
                             "e.g. (1000, 750, 500, 250)")
        for i, t in enumerate(steps):
            if not 0 < t <= self.num_train_timesteps:
                raise ValueError(f"FlowSchedule.denoising_steps[{i}] = {t} is outside (0, "
                                 f"{self.num_train_timesteps}]: timesteps are integers, 0 exclusive")
            if i and t >= steps[i - 1]:
                raise ValueError(f"FlowSchedule.denoising_steps must be strictly descending, but "
                                 f"[{i - 1}] = {steps[i - 1]} is followed by [{i}] = {t}")
        self.denoising_steps = steps

    # ---- timesteps --------------------------------------------------------------------------------
    def warp(self, sigma) -> Tensor:
        """Apply this schedule's shift to sigma in [0, 1]."""
        return shift_sigma(sigma, self.shift)

    def student_sigmas(self, device=None, dtype=torch.float32) -> Tensor:
        """[S] warped student sigmas, descending (the first is 1.0 for the default list)."""
        raw = torch.tensor(self.denoising_steps, dtype=torch.float64) / self.num_train_timesteps
        return self.warp(raw).to(device=device, dtype=dtype)

    def teacher_sigmas(self, steps: int, device=None, dtype=torch.float32) -> Tensor:
        """[steps + 1] warped linspace(1, 0) for the teacher's Euler sampler, ending exactly at 0."""
        if not isinstance(steps, int) or steps < 1:
            raise ValueError(f"teacher_sigmas(steps={steps!r}): steps must be an int >= 1")
        return self.warp(torch.linspace(1, 0, steps + 1, dtype=torch.float64)).to(device=device, dtype=dtype)

    def sample_training_sigma(self, shape, mode: str = "logit_normal", generator: torch.Generator | None = None,
                              mean: float = 0.0, std: float = 1.0, shifted: bool = True,
                              clamp: tuple[float, float] = (0.0, 1.0), device=None,
                              dtype=torch.float32) -> Tensor:
        """Random training sigmas of ``shape`` (e.g. (B, F): one per frame).

        mode: ``logit_normal`` draws sigmoid(N(mean, std)); ``uniform`` draws U(0, 1).
        shifted: then warp through the shift. clamp: final (min, max), e.g. (0.02, 0.98) for DMD.
        """
        if mode not in SIGMA_MODES:
            raise ValueError(f"sample_training_sigma(mode={mode!r}): expected one of {', '.join(SIGMA_MODES)}")
        lo, hi = clamp
        if not 0 <= lo <= hi <= 1:
            raise ValueError(f"sample_training_sigma(clamp={clamp}): expected 0 <= min <= max <= 1")
        if std <= 0:
            raise ValueError(f"sample_training_sigma(std={std}): std must be > 0")
        # drawn on the generator's device, as torch requires (one generator per row allowed: see `draw`)
        if mode == "logit_normal":
            u = draw(torch.randn, shape, generator, device=device, dtype=torch.float64)
            sigma = torch.sigmoid(u * std + mean)
        else:
            sigma = draw(torch.rand, shape, generator, device=device, dtype=torch.float64)
        if shifted:
            sigma = self.warp(sigma)
        return sigma.clamp(lo, hi).to(dtype)

    # ---- noising and conversions ------------------------------------------------------------------
    def add_noise(self, x0: Tensor, noise: Tensor, sigma) -> Tensor:
        """x_sigma [B, F, C, h, w] from x0 and eps; sigma [B, F], [B] or a scalar."""
        return add_noise(x0, noise, sigma)

    def x0_from_flow(self, x: Tensor, flow: Tensor, sigma) -> Tensor:
        return x0_from_flow(x, flow, sigma)

    def flow_from_x0(self, x: Tensor, x0: Tensor, sigma) -> Tensor:
        return flow_from_x0(x, x0, sigma)

    def flow_matching_target(self, x0: Tensor, noise: Tensor) -> Tensor:
        return flow_matching_target(x0, noise)
