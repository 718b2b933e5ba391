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
denoising passes of one chunk all see the same cache, and the cache never enters autograd.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

ROPE_POLICIES = ("window", "absolute")


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
        self.next_t = 0             # absolute time index of the next chunk's first frame
        self._staged: list[tuple[Tensor, Tensor] | None] = [None] * self.num_layers
        self._staged_info: ChunkInfo | None = None
        self._rotated: list[Tensor | None] = [None] * self.num_layers

    # ---- positions ---------------------------------------------------------------------------
    @property
    def num_tokens(self) -> int:
        return sum(c.tokens for c in self.chunks)

    def key_chunk_starts(self) -> list[int]:
        """Rotary time start of each visible chunk, under the policy."""
        if self.rope == "absolute":
            return [c.t_start for c in self.chunks]
        starts, t = [], 0
        for c in self.chunks:
            starts.append(t)
            t += c.frames
        return starts

    def query_t_start(self) -> int:
        """Rotary time start for the chunk being generated now."""
        if self.rope == "absolute":
            return self.next_t
        return sum(c.frames for c in self.chunks)

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

    # ---- commit ------------------------------------------------------------------------------
    @torch.no_grad()
    def commit(self) -> None:
        """Append the staged chunk to every layer and evict beyond sink + window."""
        if self._staged_info is None or any(s is None for s in self._staged):
            raise RuntimeError("KVCache.commit() without a staged chunk: run a forward with this cache first")
        info = self._staged_info
        for i, (k, v) in enumerate(self._staged):
            self.k[i] = k if self.k[i] is None else torch.cat([self.k[i], k], dim=2)
            self.v[i] = v if self.v[i] is None else torch.cat([self.v[i], v], dim=2)
        self.chunks.append(info)
        self.num_committed += 1
        self.next_t = info.t_start + info.frames
        if self.window is not None and len(self.chunks) > self.sink + self.window:
            self._evict(len(self.chunks) - self.sink - self.window)
        self._staged = [None] * self.num_layers
        self._staged_info = None
        self._rotated = [None] * self.num_layers

    def _evict(self, count: int) -> None:
        keep_front = sum(c.tokens for c in self.chunks[: self.sink])
        drop = sum(c.tokens for c in self.chunks[self.sink : self.sink + count])
        for i in range(self.num_layers):
            self.k[i] = torch.cat([self.k[i][:, :, :keep_front], self.k[i][:, :, keep_front + drop :]], dim=2)
            self.v[i] = torch.cat([self.v[i][:, :, :keep_front], self.v[i][:, :, keep_front + drop :]], dim=2)
        del self.chunks[self.sink : self.sink + count]

    def discard_staged(self) -> None:
        self._staged = [None] * self.num_layers
        self._staged_info = None

    def state(self) -> dict:
        """A summary for logs and tests (no tensors)."""
        return {"chunks": len(self.chunks), "tokens": self.num_tokens, "committed": self.num_committed,
                "next_t": self.next_t, "sink": self.sink, "window": self.window, "rope": self.rope}
