"""Causal self-rollout: the student generates the target chunk by chunk with its KV cache.

One function serves Self-Forcing training, offline evaluation and (per chunk) streaming, so the three can
not drift apart. For each chunk (DESIGN §2, student / self-rollout):

1. start from fresh noise at ``sigmas[0]``;
2. for each step j: predict x0 with the cached context; if j is the last step (or the exit step) stop,
   else re-noise x0 with **fresh** noise to ``sigmas[j + 1]`` (consistency-style sampling);
3. run one more pass at sigma = 0 on the chunk's result, under no_grad: that pass writes the clean K/V,
   committed to the cache only after the forward (the cache never enters autograd).

With ``exit_step`` set (training), denoising stops at that step for every chunk and only that step's pass
runs with gradient; all earlier steps run under no_grad.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial

import torch
from torch import Tensor

from realcam.modules.cache import KVCache
from realcam.modules.cond import Cond
from realcam.modules.flow import add_noise, sample_noise
from realcam.modules.protocol import CausalDenoiser, FusedCachePass
from realcam.modules.samplers import predict_x0


@dataclass
class Rollout:
    """The result of :func:`causal_rollout`.

    x0: [B, F, C, h, w] generated clean latents (each chunk's prediction at its exit step; carries the
        generator's graph when the rollout ran with gradient).
    states / predictions: with ``record=True``, per chunk the list of denoiser inputs x_j and the x0 predicted
        from each (what a block-causal forward over the whole sequence must reproduce).
    """

    x0: Tensor
    states: list[list[Tensor]] = field(default_factory=list)
    predictions: list[list[Tensor]] = field(default_factory=list)


def chunk_bounds(num_frames: int, chunk_frames: int) -> list[tuple[int, int]]:
    if num_frames % chunk_frames:
        raise ValueError(f"{num_frames} latent frames do not split into chunks of chunk_frames={chunk_frames}")
    return [(a, a + chunk_frames) for a in range(0, num_frames, chunk_frames)]


def supports_fused_cache_pass(generator: CausalDenoiser) -> bool:
    """Whether ``generator`` can run a chunk's cache pass inside the next chunk's first pass (``previous`` /
    ``defer_cache_pass`` of :func:`rollout_chunk`): it follows :class:`FusedCachePass`."""
    return isinstance(generator, FusedCachePass) and callable(generator.commit_and_forward)


def rollout_chunk(generator: CausalDenoiser, cond: Cond, sigmas: Tensor, cache: KVCache, noise_gen: torch.Generator | None,
                  like: Tensor, exit_step: int | None = None, record: bool = False,
                  noise: Tensor | None = None, previous: tuple[Tensor, Cond] | None = None,
                  defer_cache_pass: bool = False) -> tuple[Tensor, list[Tensor], list[Tensor]]:
    """Generate one chunk (``cond`` restricted to it) and commit its clean K/V to ``cache``.

    ``like`` gives shape [B, chunk_frames, C, h, w], dtype and device. ``noise`` overrides the initial noise.
    Returns (x0, states, predictions); the last two are empty unless ``record``.

    Inference can move the cache pass (one transformer pass fewer per chunk, same noise draws and steps):
    ``defer_cache_pass`` skips this chunk's clean pass and commit, and the next call, given ``previous`` = this
    chunk's (x0, cond), runs it inside its first denoising pass (``generator.commit_and_forward``).
    """
    B = like.shape[0]
    steps = len(sigmas) if exit_step is None else exit_step + 1
    if not 0 < steps <= len(sigmas):
        raise ValueError(f"exit_step={exit_step} must be in [0, {len(sigmas) - 1}] for {len(sigmas)} sigmas")
    if previous is not None and exit_step is not None:
        raise ValueError("previous (a deferred cache pass) runs without gradients: it is for inference, not "
                         "with exit_step")
    denoiser = partial(generator, cache=cache)
    x = sample_noise(like.shape, noise_gen, like) if noise is None else noise
    states, preds = [], []
    x0 = x
    for j in range(steps):
        sigma = sigmas[j].to(like.device, torch.float32).expand(B, like.shape[1])
        grad = exit_step is not None and j == exit_step and torch.is_grad_enabled()
        first = partial(generator.commit_and_forward, *previous, cache=cache) if j == 0 and previous else None
        with torch.set_grad_enabled(grad):
            x0 = predict_x0(first or denoiser, x, sigma, cond)
        if record:
            states.append(x.detach())
            preds.append(x0.detach())
        if j + 1 < steps:
            x = add_noise(x0.detach(), sample_noise(like.shape, noise_gen, like), sigmas[j + 1])
    if defer_cache_pass:
        return x0, states, preds
    with torch.no_grad():          # the clean pass: K/V of the result, remembered for the next chunks
        generator.write_cache(x0.detach(), cond, cache)
    cache.commit()
    return x0, states, preds


def causal_rollout(generator: CausalDenoiser, cond: Cond, sigmas: Tensor, noise_gen: torch.Generator | None = None, *,
                   exit_step: int | None = None, cache: KVCache | None = None, record: bool = False,
                   noise: Tensor | None = None) -> Rollout:
    """Roll a causal generator out over all of ``cond``'s frames, chunk by chunk with its KV cache.

    generator: a causal :class:`~realcam.modules.protocol.CausalDenoiser` (any registered backbone built with
        ``attention_mode='causal'``).
    sigmas: the student's warped list, descending, without a trailing 0 (``FlowSchedule.student_sigmas()``).
    noise_gen: draws the initial and every re-noising noise (fresh per step), chunk after chunk.
    exit_step: stop every chunk at this step; only that pass carries gradient (training). None = all steps,
        no gradient anywhere unless the caller enabled it and set ``exit_step``.
    cache: a fresh cache by default (``generator.new_cache()``: the model's sink and window).
    noise: optional [B, F, C, h, w] initial noise for all chunks (tests, reproducibility across layouts).
    """
    sigmas = torch.as_tensor(sigmas, dtype=torch.float32)
    if sigmas.ndim != 1 or len(sigmas) == 0 or bool((sigmas <= 0).any()):
        raise ValueError(f"sigmas {sigmas.tolist()} must be a non-empty 1-D list of positive noise levels "
                         f"(the student list, without a trailing 0)")
    cache = generator.new_cache() if cache is None else cache
    latents = cond.source
    out = Rollout(x0=latents)
    chunks = []
    for a, b in chunk_bounds(latents.shape[1], generator.chunk_frames):
        like = latents[:, a:b]
        x0, states, preds = rollout_chunk(generator, cond.frames(a, b), sigmas, cache, noise_gen, like, exit_step,
                                          record, None if noise is None else noise[:, a:b])
        chunks.append(x0)
        out.states.append(states)
        out.predictions.append(preds)
    out.x0 = torch.cat(chunks, dim=1)
    return out
