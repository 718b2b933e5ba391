"""Attention backends over one structured mask type, :class:`MaskSpec`.

Every backend is called ``backend(q, k, v, mask, scale=None) -> out`` with q/k/v ``[B, H, L, D]``
and builds the mask its own way: ``math`` (explicit reference), ``sdpa``
(``F.scaled_dot_product_attention`` with a boolean mask) and ``flex`` (FlexAttention with a
block-sparse ``BlockMask``). All of them agree with ``math`` to tolerance; the tests check it for
every registered backend, so a user's own :class:`AttentionBackend` subclass gets them for free.

Mask kinds (chunks are contiguous runs of tokens, e.g. one source/target pair each):

- ``full``: every query sees every key. q and k may differ in length (a new chunk against a KV cache).
- ``block_causal``: chunk i sees chunks j <= i.
- ``sink_window``: chunk i sees chunk j iff j <= i and (j < sink or i - j <= window), i.e. the first
  ``sink`` chunks, its own chunk and the ``window`` most recent earlier chunks. This is exactly what a
  sink + rolling-window KV cache sees at inference.
"""
from __future__ import annotations

import abc
import functools
import logging
import operator
import os
import shutil
import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from realcam.registry import ATTENTION_BACKENDS

log = logging.getLogger(__name__)

MASK_KINDS = ("full", "block_causal", "sink_window")
FLEX_COMPILE_ENV = "REALCAM_FLEX_COMPILE"  # "1" forces torch.compile for flex, "0" forces eager


# ---- mask spec ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class MaskSpec:
    """Which chunk may attend to which. Frozen and hashable, so backends cache masks per spec.

    kind: ``"full"``, ``"block_causal"`` or ``"sink_window"``.
    chunk_tokens: tokens per chunk along the sequence (must sum to L); ignored by ``full``.
    sink: the first ``sink`` chunks are always visible (``sink_window`` only).
    window: how many of the most recent *earlier* chunks are visible besides the query's own chunk.
    """

    kind: str
    chunk_tokens: tuple[int, ...] = ()
    sink: int = 0
    window: int = 0

    def __post_init__(self) -> None:
        if self.kind not in MASK_KINDS:
            raise ValueError(f"MaskSpec.kind {self.kind!r} is unknown: expected one of "
                             f"{', '.join(map(repr, MASK_KINDS))}")
        try:  # lists from YAML become a tuple, so the spec stays hashable
            tokens = tuple(operator.index(n) for n in self.chunk_tokens)
        except TypeError:
            raise TypeError(f"MaskSpec.chunk_tokens must be a sequence of ints, got {self.chunk_tokens!r}") from None
        object.__setattr__(self, "chunk_tokens", tokens)
        bad = [i for i, n in enumerate(tokens) if n <= 0]
        if bad:
            raise ValueError(f"MaskSpec.chunk_tokens[{bad[0]}] = {tokens[bad[0]]}: every chunk needs >= 1 token")
        for field in ("sink", "window"):
            value = operator.index(getattr(self, field))
            if value < 0:
                raise ValueError(f"MaskSpec.{field} = {value} must be >= 0 (a count of chunks)")
            object.__setattr__(self, field, value)
        if self.kind != "full" and not tokens:
            raise ValueError(f"MaskSpec(kind={self.kind!r}) needs chunk_tokens (tokens per chunk, summing to L)")
        if self.kind != "sink_window" and (self.sink or self.window):
            raise ValueError(f"MaskSpec.sink/window only apply to kind 'sink_window', got kind={self.kind!r} "
                             f"with sink={self.sink}, window={self.window}; use MaskSpec.sink_window(...)")

    @classmethod
    def full(cls) -> "MaskSpec":
        return cls("full")

    @classmethod
    def block_causal(cls, chunk_tokens) -> "MaskSpec":
        return cls("block_causal", chunk_tokens)

    @classmethod
    def sink_window(cls, chunk_tokens, sink: int, window: int) -> "MaskSpec":
        return cls("sink_window", chunk_tokens, sink, window)

    @property
    def num_chunks(self) -> int:
        return 1 if self.kind == "full" else len(self.chunk_tokens)

    def check_length(self, length: int) -> None:
        """Raise unless chunk_tokens adds up to ``length`` (``full`` fits any length)."""
        total = sum(self.chunk_tokens)
        if self.kind != "full" and total != length:
            raise ValueError(f"MaskSpec.chunk_tokens sums to {total} tokens but the sequence has L={length}: "
                             f"pass one entry per chunk, adding up to L")

    def chunk_ids(self, length: int, device=None) -> Tensor:
        """LongTensor [L]: the chunk index of every token (all zeros for ``full``: one chunk)."""
        if self.kind == "full":
            return torch.zeros(length, dtype=torch.long, device=device)
        self.check_length(length)
        sizes = torch.tensor(self.chunk_tokens, device=device)
        return torch.repeat_interleave(torch.arange(len(sizes), device=device), sizes)

    def chunk_visibility(self, device=None) -> Tensor:
        """BoolTensor [N, N]: entry (i, j) is True iff chunk i may attend to chunk j."""
        n = self.num_chunks
        if self.kind == "full":
            return torch.ones(n, n, dtype=torch.bool, device=device)
        i = torch.arange(n, device=device)[:, None]
        j = torch.arange(n, device=device)[None, :]
        visible = j <= i
        if self.kind == "sink_window":
            visible = visible & ((j < self.sink) | (i - j <= self.window))
        return visible

    def dense(self, length: int, device=None) -> Tensor:
        """BoolTensor [L, L]: True where a query token may attend to a key token."""
        if self.kind == "full":
            return torch.ones(length, length, dtype=torch.bool, device=device)
        ids = self.chunk_ids(length, device)
        return self.chunk_visibility(device)[ids[:, None], ids[None, :]]


@functools.lru_cache(maxsize=64)
def _cached_dense(spec: MaskSpec, length: int, device: torch.device) -> Tensor:
    return spec.dense(length, device)


# ---- backends -------------------------------------------------------------------------------------
class AttentionBackend(abc.ABC):
    """Base class: checks shapes and the mask, resolves ``scale``, then calls :meth:`forward`.

    Subclass it, implement ``forward(q, k, v, mask, scale)`` and register the class with
    ``@ATTENTION_BACKENDS.register("name")``; construction must take no required arguments.
    """

    def __call__(self, q: Tensor, k: Tensor, v: Tensor, mask: MaskSpec, scale: float | None = None) -> Tensor:
        self.check_inputs(q, k, v, mask)
        return self.forward(q, k, v, mask, q.shape[-1] ** -0.5 if scale is None else float(scale))

    @abc.abstractmethod
    def forward(self, q: Tensor, k: Tensor, v: Tensor, mask: MaskSpec, scale: float) -> Tensor:
        """q [B, H, Lq, D], k [B, H, Lk, D], v [B, H, Lk, Dv] -> out [B, H, Lq, Dv] in q's dtype."""

    @staticmethod
    def check_inputs(q: Tensor, k: Tensor, v: Tensor, mask: MaskSpec) -> None:
        if not isinstance(mask, MaskSpec):
            raise TypeError(f"mask must be a MaskSpec, got {type(mask).__name__}; e.g. MaskSpec.full()")
        if q.ndim != 4 or k.ndim != 4 or v.ndim != 4:
            raise ValueError(f"q/k/v must be [B, H, L, D], got q {tuple(q.shape)}, k {tuple(k.shape)}, "
                             f"v {tuple(v.shape)}")
        if q.shape[:2] != k.shape[:2] or k.shape[:3] != v.shape[:3] or q.shape[-1] != k.shape[-1]:
            raise ValueError(f"q/k/v shapes disagree: q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}; "
                             f"expected q [B, H, Lq, D], k [B, H, Lk, D], v [B, H, Lk, Dv]")
        if mask.kind != "full" and q.shape[2] != k.shape[2]:
            raise ValueError(f"mask kind {mask.kind!r} needs q and k of equal length, got Lq={q.shape[2]}, "
                             f"Lk={k.shape[2]}; attend from a chunk to a KV cache with MaskSpec.full()")
        mask.check_length(q.shape[2])

    def dense_mask(self, mask: MaskSpec, length: int, device: torch.device) -> Tensor | None:
        """Cached BoolTensor [L, L] for ``mask``, or None for ``full`` (no mask needed)."""
        return None if mask.kind == "full" else _cached_dense(mask, length, device)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


@ATTENTION_BACKENDS.register("math")
class MathAttention(AttentionBackend):
    """Reference: softmax(q k^T * scale) v with the dense mask, softmax in float32."""

    def forward(self, q, k, v, mask, scale):
        scores = (q.float() @ k.float().transpose(-2, -1)) * scale
        dense = self.dense_mask(mask, q.shape[2], q.device)
        if dense is not None:
            scores = scores.masked_fill(~dense, float("-inf"))
        return (scores.softmax(dim=-1) @ v.float()).to(q.dtype)


@ATTENTION_BACKENDS.register("sdpa")
class SDPAAttention(AttentionBackend):
    """``F.scaled_dot_product_attention``; no mask tensor for ``full`` so fused kernels stay eligible."""

    def forward(self, q, k, v, mask, scale):
        dense = self.dense_mask(mask, q.shape[2], q.device)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=dense, scale=scale)


# FlexAttention: a block-sparse kernel whose mask comes from a ``mask_mod(b, h, q_idx, kv_idx)``.
def _chunk_mask_mod(chunk_ids: Tensor, visibility: Tensor):
    # One mask_mod body for every kind: only the captured tensors differ, so a compiled flex guards on
    # their shapes alone instead of recompiling per (sink, window) value.
    def mask_mod(b, h, q_idx, kv_idx):
        return visibility[chunk_ids[q_idx], chunk_ids[kv_idx]]

    return mask_mod


@functools.lru_cache(maxsize=32)
def _cached_block_mask(spec: MaskSpec, length: int, device: torch.device):
    from torch.nn.attention.flex_attention import create_block_mask

    mask_mod = _chunk_mask_mod(spec.chunk_ids(length, device), spec.chunk_visibility(device))
    return create_block_mask(mask_mod, None, None, length, length, device=device)


@functools.lru_cache(maxsize=1)
def _compiled_flex():
    from torch.nn.attention.flex_attention import flex_attention

    # dynamic=False: inductor's CPU flex kernel fails to build (C++ compile error) once dynamic shapes
    # kick in on the second sequence length; one static graph per length compiles and runs fine.
    return torch.compile(flex_attention, dynamic=False)


def _eager_flex(q, k, v, block_mask, scale):
    from torch.nn.attention.flex_attention import flex_attention

    with warnings.catch_warnings():  # eager is deliberate here; torch's "use torch.compile" hint is noise
        warnings.filterwarnings("ignore", message="flex_attention called without torch.compile")
        return flex_attention(q, k, v, block_mask=block_mask, scale=scale)


class _FlexWithDenseGrad(torch.autograd.Function):
    """Flex forward plus a dense attention backward, for devices where torch ships no flex backward."""

    @staticmethod
    def forward(ctx, q, k, v, run, dense, scale):
        ctx.save_for_backward(q, k, v, dense)
        ctx.scale = scale
        return run(q.detach(), k.detach(), v.detach())

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, d_out):
        q, k, v, dense = ctx.saved_tensors
        qf, kf, vf, d_out = q.float(), k.float(), v.float(), d_out.float()
        scores = (qf @ kf.transpose(-2, -1)) * ctx.scale
        if dense.numel():
            scores = scores.masked_fill(~dense, float("-inf"))
        p = scores.softmax(dim=-1)                               # [B, H, Lq, Lk]
        d_p = d_out @ vf.transpose(-2, -1)
        d_scores = p * (d_p - (p * d_p).sum(dim=-1, keepdim=True)) * ctx.scale  # softmax Jacobian
        d_q, d_k, d_v = d_scores @ kf, d_scores.transpose(-2, -1) @ qf, p.transpose(-2, -1) @ d_out
        return d_q.to(q.dtype), d_k.to(k.dtype), d_v.to(v.dtype), None, None, None


@ATTENTION_BACKENDS.register("flex")
class FlexAttention(AttentionBackend):
    """FlexAttention with a ``BlockMask`` built from chunk ids, cached per (spec, L, device).

    compile: True runs ``torch.compile(flex_attention)`` (fused kernel), False runs torch's eager
    flex (materializes the scores), None (default) reads ``REALCAM_FLEX_COMPILE`` ("0"/"1") and
    otherwise compiles on CUDA, and on CPU when a C++ compiler is on PATH. If compilation fails the
    backend logs once and stays eager. Compiled graphs are static per sequence length and dtype
    (each new one compiles, seconds on CPU). Chunks aligned to the 128-token block size skip most work.

    torch has no flex backward on CPU/MPS; there, when gradients are needed, the forward still runs
    through flex and the backward is computed densely from the same mask.
    """

    def __init__(self, compile: bool | None = None):
        if compile is None:
            env = os.environ.get(FLEX_COMPILE_ENV, "").strip().lower()
            if env in ("0", "false", "no", "off"):
                compile = False
            elif env in ("1", "true", "yes", "on"):
                compile = True
            elif env not in ("", "auto"):
                raise ValueError(f"{FLEX_COMPILE_ENV}={env!r}: expected 0, 1 or auto")
        self.compile = compile
        self._compile_failed = False

    def uses_compile(self, device: torch.device) -> bool:
        """Whether calls on ``device`` go through ``torch.compile`` right now."""
        if self._compile_failed:
            return False
        if self.compile is not None:
            return self.compile
        if device.type == "cuda":
            return True
        return device.type == "cpu" and any(shutil.which(cc) for cc in ("g++", "c++", "clang++"))

    def _run(self, q, k, v, block_mask, scale):
        if self.uses_compile(q.device):
            try:
                return _compiled_flex()(q, k, v, block_mask=block_mask, scale=scale)
            except Exception as err:  # no compiler, unsupported platform or an inductor bug: stay correct
                self._compile_failed = True
                log.warning("flex attention: torch.compile failed on %s (%s: %s); using eager flex from now on",
                            q.device, type(err).__name__, str(err).splitlines()[0][:200] if str(err) else "")
        return _eager_flex(q, k, v, block_mask, scale)

    def forward(self, q, k, v, mask, scale):
        block_mask = None if mask.kind == "full" else _cached_block_mask(mask, q.shape[2], q.device)
        run = functools.partial(self._run, block_mask=block_mask, scale=scale)
        if q.device.type not in ("cpu", "mps"):
            return run(q, k, v)
        # torch refuses flex on CPU/MPS whenever an input requires grad, even under no_grad
        if torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad):
            dense = self.dense_mask(mask, q.shape[2], q.device)
            empty = torch.empty(0, dtype=torch.bool, device=q.device)
            return _FlexWithDenseGrad.apply(q, k, v, run, empty if dense is None else dense, scale)
        return run(q.detach(), k.detach(), v.detach())

    def __repr__(self) -> str:
        return f"FlexAttention(compile={self.compile})"
