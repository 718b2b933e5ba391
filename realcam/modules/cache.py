"""KV cache for chunk-by-chunk causal inference: attention sink + rolling window.

The cache keeps, per layer, the keys (before RoPE) and values of committed chunks: the first
``sink`` chunks forever and the ``window`` most recent ones after them. So the cost of a chunk is
bounded however long the stream runs.

Keys are stored *un-rotated* because their rotary time position depends on the policy:

- ``"window"`` (default): positions are relative to what is visible. Visible chunks are laid out
  back to back from t = 0 (sinks first, then the window, then the query chunk), so positions stay
  bounded forever; MotionStream found unbounded RoPE makes latency and quality drift.
- ``"absolute"``: each chunk keeps the time index it was generated at (grows without bound); with
  it, a rolling cache equals a full forward under the ``sink_window`` mask.

Updates are *staged* during a forward and only :meth:`commit`-ted afterwards, so the several
denoising passes of one chunk all see the same cache, and the cache never enters autograd. Every pass of
one chunk takes the same conditions (source, cameras); only x and sigma change between them.

Between two commits the cache contents are fixed, so what the passes of one chunk share is built once:
:meth:`kv_buffers` (rotated keys and values laid out for attention) and :attr:`scratch` (a model's
per-chunk memo, keyed by what it holds: valid for the chunk being generated, whatever its pass). Both are
dropped by every commit, discard and reset.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

ROPE_POLICIES = ("window", "absolute")


@dataclass(frozen=True)
class CommitPlan:
    """What committing ``info`` will do (:meth:`KVCache.plan_commit`), known before it is done: the tokens kept in
    front and evicted after them, and the visible chunks with their rotary starts afterwards."""
    info: "ChunkInfo"
    keep_front: int
    drop: int
    chunks: list
    starts: list[int]
    query_t_start: int      # where the chunk after ``info`` sits
    evicted: int = 0        # chunks evicted after the sink ones


@dataclass(frozen=True)
class ChunkInfo:
    frames: int     # token frames per stream in this chunk
    tokens: int     # tokens this chunk occupies in the cache (source + target)
    t_start: int    # absolute time index of its first frame


class KVCache:
    def __init__(self, num_layers: int, sink: int = 1, window: int | None = None, rope: str = "window"):
        if rope not in ROPE_POLICIES:
            raise ValueError(f"rope={rope!r} is not a RoPE policy; choose one of {ROPE_POLICIES}")
        if sink < 0 or (window is not None and window < 0):
            raise ValueError(f"sink={sink} and window={window} must be >= 0 (window=None keeps everything)")
        if sink == 0 and window == 0:
            raise ValueError("sink=0 and window=0 leaves a chunk nothing to attend to but itself; "
                             "keep at least one sink or window chunk")
        self.num_layers, self.sink, self.window, self.rope = num_layers, sink, window, rope
        self.reset()

    def reset(self) -> None:
        self.k: list[Tensor | None] = [None] * self.num_layers
        self.v: list[Tensor | None] = [None] * self.num_layers
        self.chunks: list[ChunkInfo] = []
        self.num_committed = 0      # chunks ever committed (the absolute index of the next chunk)
        # A model's memo for the whole stream, keyed by values it checks (e.g. the text K/V of a prompt,
        # compared by value); unlike ``scratch`` it survives commits.
        self.memo: dict = {}
        self.next_t = 0             # absolute time index of the next chunk's first frame
        # Per layer, each visible chunk's own (K, V), in cache order, once keep_chunk_kv() asked for them: what
        # the pinned passes of a checkpointed rollout hold, shared from chunk to chunk (None: not kept).
        self.chunk_kv: list[list[tuple[Tensor, Tensor]]] | None = None
        self._staged: list[tuple[Tensor, Tensor] | None] = [None] * self.num_layers
        self._staged_info: ChunkInfo | None = None
        self._drop_chunk_state()

    def _drop_chunk_state(self) -> None:
        self._rotated: list[Tensor | None] = [None] * self.num_layers
        self._buffers: list[tuple[Tensor, Tensor] | None] = [None] * self.num_layers
        # Scratch space for the model running this chunk's passes (e.g. its camera embedding); only valid
        # until the cache changes, hence cleared with the buffers.
        self.scratch: dict = {}

    # ---- positions ---------------------------------------------------------------------------
    @property
    def num_tokens(self) -> int:
        return sum(c.tokens for c in self.chunks)

    def key_chunk_starts(self, chunks: list[ChunkInfo] | None = None) -> list[int]:
        """Rotary time start of each visible chunk (default: the cache's), under the policy."""
        chunks = self.chunks if chunks is None else chunks
        if self.rope == "absolute":
            return [c.t_start for c in chunks]
        starts, t = [], 0
        for c in chunks:
            starts.append(t)
            t += c.frames
        return starts

    def query_t_start(self, chunks: list[ChunkInfo] | None = None, next_t: int | None = None) -> int:
        """Rotary time start for the chunk being generated now (or after ``chunks`` / ``next_t``)."""
        if self.rope == "absolute":
            return self.next_t if next_t is None else next_t
        return sum(c.frames for c in (self.chunks if chunks is None else chunks))

    # ---- forward-time access -----------------------------------------------------------------
    def stage(self, layer: int, k: Tensor, v: Tensor) -> None:
        """Remember this layer's new K (un-rotated) and V, [B, H, L, D]; detached, committed later."""
        self._staged[layer] = (k.detach(), v.detach())

    def stage_chunk(self, frames: int, tokens: int) -> None:
        self._staged_info = ChunkInfo(frames=frames, tokens=tokens, t_start=self.next_t)

    def rotated_keys(self, layer: int, rotate: Callable[[Tensor, list[ChunkInfo], list[int]], Tensor]) -> Tensor | None:
        """Cached keys with RoPE applied at their policy positions; memoized until the next commit."""
        if self.k[layer] is None:
            return None
        if self._rotated[layer] is None:
            self._rotated[layer] = rotate(self.k[layer], self.chunks, self.key_chunk_starts())
        return self._rotated[layer]

    @torch.no_grad()
    def kv_buffers(self, layer: int, tokens: int, rotate: Callable[[Tensor, list[ChunkInfo], list[int]], Tensor],
                   k_like: Tensor, v_like: Tensor, dtypes: tuple[torch.dtype, torch.dtype]) -> tuple[Tensor, Tensor]:
        """Key and value buffers [B, H, cached + tokens, D] for the no-grad passes of the chunk being generated.

        The cached keys (rotated at their policy positions) and values sit in front, cast to ``dtypes``;
        the last ``tokens`` rows are left for the chunk, which each pass overwrites in place. Built on the
        first pass after a commit, so later passes neither rotate, concatenate nor cast the cache again.
        ``k_like`` / ``v_like`` [B, H, tokens, D] give batch, heads, widths and device.
        """
        B, H, _, Dk = k_like.shape
        Dv = v_like.shape[-1]
        past = 0 if self.k[layer] is None else self.k[layer].shape[2]
        buf = self._buffers[layer]
        if (buf is not None and buf[0].shape == (B, H, past + tokens, Dk) and buf[1].shape[-1] == Dv
                and (buf[0].dtype, buf[1].dtype) == dtypes and buf[0].device == k_like.device
                and buf[0].is_inference() == torch.is_inference_mode_enabled()):   # else in-place writes fail
            return buf
        k_buf = torch.empty(B, H, past + tokens, Dk, dtype=dtypes[0], device=k_like.device)
        v_buf = torch.empty(B, H, past + tokens, Dv, dtype=dtypes[1], device=k_like.device)
        if past:
            k_buf[:, :, :past] = rotate(self.k[layer], self.chunks, self.key_chunk_starts())
            v_buf[:, :, :past] = self.v[layer]
        self._buffers[layer] = (k_buf, v_buf)
        return k_buf, v_buf

    def keep_chunk_kv(self) -> bool:
        """From now on also keep :attr:`chunk_kv` (references to the staged K/V that commits concatenate). Only an
        empty cache can start; True when they are kept. Each cache state's concatenated K/V is a new tensor, so
        passes that hold on to several states (checkpointed, :meth:`~realcam.modules.processors.CachedLayer.pin`)
        hold every chunk once this way, instead of once per state that shows it."""
        if self.chunk_kv is None and self.num_committed == 0:
            self.chunk_kv = [[] for _ in range(self.num_layers)]
        return self.chunk_kv is not None

    # ---- commit ------------------------------------------------------------------------------
    @torch.no_grad()
    def commit(self) -> None:
        """Append the staged chunk to every layer and evict beyond sink + window."""
        if self._staged_info is None or any(s is None for s in self._staged):
            raise RuntimeError("KVCache.commit() without a staged chunk: run a forward with this cache first")
        plan = self.plan_commit(self._staged_info)
        kv = [self.appended(i, k, v, plan) for i, (k, v) in enumerate(self._staged)]
        self.install_commit(plan, kv, own_kv=self._staged)
        self.discard_staged()

    def plan_commit(self, info: ChunkInfo) -> CommitPlan:
        """What committing the chunk ``info`` will keep, evict and where every visible chunk will sit."""
        evict = 0 if self.window is None else max(0, len(self.chunks) + 1 - self.sink - self.window)
        chunks = self.chunks[: self.sink] + self.chunks[self.sink + evict:] + [info]
        return CommitPlan(info, keep_front=sum(c.tokens for c in self.chunks[: self.sink]),
                          drop=sum(c.tokens for c in self.chunks[self.sink: self.sink + evict]), chunks=chunks,
                          starts=self.key_chunk_starts(chunks),
                          query_t_start=self.query_t_start(chunks, info.t_start + info.frames), evicted=evict)

    def appended(self, layer: int, k: Tensor, v: Tensor, plan: CommitPlan) -> tuple[Tensor, Tensor]:
        """This layer's keys and values once ``plan`` is committed with the chunk's (k, v); the cache itself is
        left as it is (one concatenation per tensor: the kept old tokens, minus the evicted ones, and the new)."""
        return (self._append(self.k[layer], k.detach(), plan.keep_front, plan.drop),
                self._append(self.v[layer], v.detach(), plan.keep_front, plan.drop))

    @torch.no_grad()
    def install_commit(self, plan: CommitPlan, kv: list[tuple[Tensor, Tensor]],
                       next_buffers: list[tuple[Tensor, Tensor]] | None = None,
                       own_kv: list[tuple[Tensor, Tensor]] | None = None) -> None:
        """Make ``plan`` happen with every layer's :meth:`appended` keys and values. ``next_buffers``: the KV
        buffers of the chunk after it, already built (a pass that committed one chunk and started the next,
        whose staged K/V then stay staged); without them the chunk state is dropped as by :meth:`commit`.
        ``own_kv``: the chunk's own (K, V) per layer, for :attr:`chunk_kv` (without them it stops being kept)."""
        if len(kv) != self.num_layers:
            raise ValueError(f"install_commit needs {self.num_layers} layers of keys and values, got {len(kv)}")
        self.k, self.v = [k for k, _ in kv], [v for _, v in kv]
        if self.chunk_kv is not None:       # the sink chunks, the window after the evicted ones, the new chunk
            s, e = self.sink, plan.evicted
            self.chunk_kv = None if own_kv is None else [c[:s] + c[s + e:] + [own]
                                                         for c, own in zip(self.chunk_kv, own_kv)]
        self.chunks = list(plan.chunks)
        self.num_committed += 1
        self.next_t = plan.info.t_start + plan.info.frames
        self._drop_chunk_state()
        if next_buffers is not None:
            self._buffers = list(next_buffers)
            self._staged_info = ChunkInfo(plan.info.frames, plan.info.tokens, self.next_t)

    @staticmethod
    def _append(old: Tensor | None, new: Tensor, keep_front: int, drop: int) -> Tensor:
        if old is None:
            return new
        parts = [old[:, :, :keep_front], old[:, :, keep_front + drop:], new] if drop else [old, new]
        return torch.cat(parts, dim=2)

    def discard_staged(self) -> None:
        self._staged = [None] * self.num_layers
        self._staged_info = None
        self._drop_chunk_state()

    def snapshot(self) -> dict:
        """Everything :meth:`restore` needs to undo what came after: every field (committed keys and values,
        chunks, counters, staged K/V, KV buffers, scratch), lists and dicts copied one level deep. Cheap: commits
        build new tensors and never write into cached ones, so holding references is enough. (A pass may write
        its own rows into the current chunk's KV buffers; every pass writes those rows before it reads them.)"""
        return {name: _shallow_copy(value) for name, value in vars(self).items()}

    def restore(self, snapshot: dict) -> None:
        """Go back to a :meth:`snapshot` (an interrupted chunk leaves no trace)."""
        self.__dict__.update({name: _shallow_copy(value) for name, value in snapshot.items()})

    def state(self) -> dict:
        """A summary for logs and tests (no tensors)."""
        return {"chunks": len(self.chunks), "tokens": self.num_tokens, "committed": self.num_committed,
                "next_t": self.next_t, "sink": self.sink, "window": self.window, "rope": self.rope}


def _shallow_copy(value):
    return list(value) if isinstance(value, list) else dict(value) if isinstance(value, dict) else value
