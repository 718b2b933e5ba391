"""The backbone protocol: what samplers, rollout, training systems and streaming may ask of a network.

Every registered backbone (:data:`~realcam.registry.BACKBONES`) follows :class:`CausalDenoiser`; the contract
tests (tests/modules/test_backbone_contract.py) run over ``BACKBONES.list()``, so a plugin's backbone gets them
for free. docs/extending.md ("Write your own backbone") walks through one.
"""
from __future__ import annotations

from typing import Literal, Protocol, runtime_checkable

from torch import Tensor

from realcam.modules.cache import KVCache
from realcam.modules.cond import Cond

# The keyword arguments the contract tests build every registered backbone with (tiny sizes); a backbone's
# factory must accept them, plus attention_mode, chunk_frames, sink_chunks, window_chunks, rope_policy, attention.
CONTRACT_SIZE = dict(in_channels=12, dim=24, depth=2, heads=2, ffn_dim=48, patch=(1, 2, 2), freq_dim=32)


@runtime_checkable
class Denoiser(Protocol):
    def __call__(self, x: Tensor, sigma: Tensor, cond: Cond, cache: KVCache | None = None) -> Tensor:
        """x [B, F, C, h, w] noisy target latents, sigma [B, F] (or [B]) -> flow v = eps - x0, x's shape.

        Without a cache: the whole clip, under the model's own mask (bidirectional, or block-causal over
        chunks of ``chunk_frames``). With one: x is the next chunk; it attends to the cache and its K/V are
        staged (``cache.commit()`` keeps them). Every pass of one chunk takes the same ``cond``.
        """


@runtime_checkable
class CausalDenoiser(Denoiser, Protocol):
    """A denoiser that can generate chunk by chunk with a KV cache (the student; teachers are built with
    ``attention_mode='bidirectional'`` and never get a cache)."""

    chunk_frames: int                   # latent frames per chunk: the block-causal and cache unit
    attention_mode: Literal["bidirectional", "causal"]
    sink_chunks: int                    # the causal visibility and the default cache's
    window_chunks: int | None
    text_dim: int | None                # the width of cond.text it reads (then required), None without text

    def new_cache(self) -> KVCache:
        """A KV cache with this model's depth, sink, window and RoPE policy."""

    def write_cache(self, x: Tensor, cond: Cond, cache: KVCache) -> None:
        """Stage the K/V of the finished chunk x at sigma = 0 (the clean pass), as ``self(x, 0, cond, cache)``
        would, without computing the flow."""


@runtime_checkable
class FusedCachePass(Protocol):
    """Optional: the clean pass of chunk i and the first pass of chunk i + 1 as one (streaming)."""

    def commit_and_forward(self, prev_x0: Tensor, prev_cond: Cond, x: Tensor, sigma: Tensor, cond: Cond,
                           cache: KVCache) -> Tensor:
        """The flow of x, as ``write_cache(prev_x0, prev_cond, cache); cache.commit(); self(x, sigma, cond,
        cache)`` gives it (to float rounding), leaving the same cache."""


def check_causal(network: object, field: str = "network") -> CausalDenoiser:
    """``network`` if it can stream; else an error naming ``field`` and the fix."""
    if not isinstance(network, CausalDenoiser):
        missing = [name for name in ("chunk_frames", "attention_mode", "sink_chunks", "window_chunks", "text_dim",
                                     "new_cache", "write_cache") if not hasattr(network, name)]
        raise TypeError(f"{field} ({type(network).__name__}) does not follow the CausalDenoiser protocol (missing "
                        f"{', '.join(missing)}): see docs/extending.md, 'Write your own backbone'")
    if network.attention_mode != "causal":
        raise ValueError(f"{field} must be causal but is bidirectional (a teacher?): set {field}.init_args."
                         f"attention_mode: causal (the student generates chunk by chunk with a KV cache)")
    return network
