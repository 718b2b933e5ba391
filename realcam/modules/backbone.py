"""A Wan-shaped diffusion transformer over interleaved source/target frames.

Top to bottom: embedders, the model, presets; the block is in :mod:`realcam.modules.block` and how its
attention is done (masked, cached, the fused cache pass) in :mod:`realcam.modules.processors`. The model
follows :class:`~realcam.modules.protocol.CausalDenoiser`: ``model(x, sigma, cond, cache=None) -> flow`` with
x [B, F, C, h, w] the noisy target latents, sigma [B, F] per target frame (source tokens are always clean,
sigma = 0) and flow = eps - x0.

The sequence is a list of *groups*, one per (stream, token frame), each a (gh x gw) token grid:
- ``interleaved`` (RealCam): per chunk ``[S_i | Y_i]``, the source and target frames of one instant
  share their time index, so the model is length-agnostic and ready for causal attention;
- ``prefix`` (ReCamMaster ablation): ``[S_1..S_T, Y_1..Y_T]``, target times offset by T,
  bidirectional only.
"""
from __future__ import annotations

import math
from functools import partial
from typing import Literal, NamedTuple, Sequence

import torch
from torch import Tensor, nn

from realcam.modules.attention import AttentionBackend, MaskSpec, SDPAAttention
from realcam.modules.block import DiTBlock
from realcam.modules.cache import ChunkInfo, KVCache
from realcam.modules.camera import CameraEncoder
from realcam.modules.cond import Cond
from realcam.modules.patches import patchify, unpatchify
from realcam.modules.reproject import SourceReprojection
from realcam.modules.processors import CachedAttention, CommitAndAttend, MaskedAttention
from realcam.modules.rope import Rope3D
from realcam.registry import ATTENTION_BACKENDS, BACKBONES, CAMERA_ENCODERS

# ---------------------------------------------------------------------------------------------
# Embedders
# ---------------------------------------------------------------------------------------------


def sinusoidal_embedding(t: Tensor, dim: int) -> Tensor:
    """t [...] (sigma * 1000) -> [..., dim] in float32, cos first as in Wan."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device, dtype=torch.float64) / half)
    ang = t.double()[..., None] * freqs
    return torch.cat([ang.cos(), ang.sin()], dim=-1).float()


# ---------------------------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------------------------

Layout = Literal["interleaved", "prefix"]
AttentionMode = Literal["bidirectional", "causal"]


@BACKBONES.register("dit")
class CrossFrameDiT(nn.Module):
    """Wan-shaped DiT over ``[S_i | Y_i]`` pairs; every size is a parameter.

    Args:
        in_channels: latent channels C (must match the codec).
        patch: (pt, ph, pw) patch size over (frames, rows, cols).
        chunk_frames: latent frames per chunk (block-causal unit and cache unit).
        attention_mode: ``bidirectional`` (teacher, critic) or ``causal`` (student; chunk i sees chunks <= i).
        sink_chunks / window_chunks: the causal visibility (window None = unbounded); also the KV cache's.
        rope_policy: ``window`` (positions relative to the visible chunks) or ``absolute``.
        camera_encoder: a registry name or a :class:`CameraEncoder` instance (``class_path`` in YAML).
        attention: a registry name or an :class:`AttentionBackend` instance.
        reproject_depths: depths (units of the camera translations) at which every target token also gets the
            source sampled where its ray lands (:class:`~realcam.modules.reproject.SourceReprojection`, a
            zero-initialized term next to the camera embedding); None turns it off.
        reproject_space_to_depth: sample the source on the f-times finer grid the latents fold (the pixel codec's
            factor; 1 = sample latents as they are).
        reproject_blend: the head also emits per-pixel logits over (each depth, generated) and the x0 estimate is
            that softmax mix of the warped source and the generated x0 (:meth:`SourceReprojection.blend`): the
            network can copy texture it sees in the source instead of regenerating it. Needs ``prediction: x0``.
        reproject_copy_gate: with the blend, copy the warped source outright where it agrees at every depth
            (spread below this tolerance; 0 = off): exact at the identity pose and under pure rotations
            (:class:`~realcam.modules.reproject.SourceReprojection`, ``copy_gate``). No parameters.
        text_dim: the width of the text embeddings in ``Cond.text`` (umT5: 4096): adds Wan's text embedder and a
            text cross-attention to every block; then every call needs ``cond.text``. None: no text.
        fp32_modulation: compute the time path (sinusoid, MLP, projection), the modulation and the residual stream
            in float32 under bf16 autocast, as Wan does (the linears and attention still run in bf16).
        prediction: what the head predicts. ``flow`` (Wan) outputs v directly. ``x0`` predicts the clean
            latents and returns v = (x - x0) / max(sigma, min_sigma): the right choice when a patch has more
            features than the width (pixel codecs), since a narrow network cannot carry the noise through to v.
    """

    def __init__(
        self,
        in_channels: int = 48,
        dim: int = 128,
        depth: int = 4,
        heads: int = 4,
        ffn_dim: int = 512,
        patch: tuple[int, int, int] = (1, 2, 2),
        freq_dim: int = 256,
        chunk_frames: int = 1,
        layout: Layout = "interleaved",
        attention_mode: AttentionMode = "bidirectional",
        sink_chunks: int = 1,
        window_chunks: int | None = None,
        rope_policy: Literal["window", "absolute"] = "window",
        rope_theta: float = 10000.0,
        camera_encoder: str | CameraEncoder = "plucker",
        camera_encoder_args: dict | None = None,
        attention: str | AttentionBackend = "sdpa",
        prediction: Literal["flow", "x0"] = "flow",
        reproject_depths: Sequence[float] | None = None,
        reproject_hidden: int | None = None,
        reproject_space_to_depth: int = 1,
        reproject_blend: bool = False,
        reproject_copy_gate: float = 0.0,
        min_sigma: float = 0.05,
        eps: float = 1e-6,
        text_dim: int | None = None,
        fp32_modulation: bool = False,
    ):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim={dim} is not divisible by heads={heads}")
        if layout == "prefix" and attention_mode != "bidirectional":
            raise ValueError("layout='prefix' needs the whole source first, so it only supports "
                             "attention_mode='bidirectional'; use layout='interleaved' for causal models")
        if chunk_frames % patch[0]:
            raise ValueError(f"chunk_frames={chunk_frames} must be a multiple of the temporal patch {patch[0]}")
        self.in_channels, self.dim, self.depth, self.heads = in_channels, dim, depth, heads
        self.patch, self.chunk_frames, self.layout = tuple(patch), chunk_frames, layout
        self.attention_mode, self.sink_chunks, self.window_chunks = attention_mode, sink_chunks, window_chunks
        self.rope_policy, self.freq_dim = rope_policy, freq_dim
        if prediction not in ("flow", "x0"):
            raise ValueError(f"prediction={prediction!r}: choose 'flow' or 'x0'")
        self.prediction, self.min_sigma = prediction, min_sigma
        pt, ph, pw = self.patch
        patch_feats = in_channels * pt * ph * pw

        self.patch_embed = nn.Linear(patch_feats, dim)
        self.stream_embed = nn.Parameter(torch.randn(2, dim) * 0.02)   # 0 = source, 1 = target
        self.time_embed = nn.Sequential(nn.Linear(freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.time_proj = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))
        nn.init.zeros_(self.time_proj[1].weight)
        nn.init.zeros_(self.time_proj[1].bias)
        self.text_dim, self.fp32_modulation = text_dim, bool(fp32_modulation)
        self.text_embed = None if text_dim is None else nn.Sequential(
            nn.Linear(text_dim, dim), nn.GELU(approximate="tanh"), nn.Linear(dim, dim))
        self.blocks = nn.ModuleList(DiTBlock(dim, heads, ffn_dim, eps, cross_attention=text_dim is not None)
                                    for _ in range(depth))
        self.head_norm = nn.LayerNorm(dim, eps=eps, elementwise_affine=False)
        self.head_modulation = nn.Parameter(torch.zeros(1, 1, 2, dim))
        self.head = nn.Linear(dim, patch_feats)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)
        self.rope = Rope3D(dim // heads, rope_theta)

        if isinstance(camera_encoder, str):
            camera_encoder = build_camera_encoder(camera_encoder, dim, depth, camera_encoder_args)
        if getattr(camera_encoder, "dim", dim) != dim:
            raise ValueError(f"camera_encoder.dim={camera_encoder.dim} does not match the backbone dim={dim}; "
                             f"set init_args.dim: {dim}")
        if getattr(camera_encoder, "per_block", False) and camera_encoder.depth != depth:
            raise ValueError(f"camera_encoder.depth={camera_encoder.depth} does not match the backbone depth={depth} "
                             f"(a per-block camera encoder acts in every block); set init_args.depth: {depth}")
        self.camera_encoder = camera_encoder
        self.reproject = None if reproject_depths is None else SourceReprojection(
            dim, in_channels, self.patch, reproject_depths, reproject_hidden, reproject_space_to_depth,
            reproject_copy_gate)
        if reproject_blend and (self.reproject is None or prediction != "x0"):
            raise ValueError("reproject_blend=True mixes warped source into the x0 estimate: it needs "
                             "reproject_depths set and prediction='x0'")
        if reproject_copy_gate and not reproject_blend:
            raise ValueError(f"reproject_copy_gate={reproject_copy_gate} acts inside the blend: set "
                             f"reproject_blend: true (or reproject_copy_gate: 0)")
        self.blend_head = None
        if reproject_blend:     # zero-initialized: every valid depth and the generated x0 start equally weighted
            self.blend_head = nn.Linear(dim, self.reproject.blend_channels() * pt * ph * pw)
            nn.init.zeros_(self.blend_head.weight)
            nn.init.zeros_(self.blend_head.bias)
        self.attention = ATTENTION_BACKENDS.build(attention) if isinstance(attention, str) else attention
        self._layouts: dict[tuple, tuple[Tensor, Tensor, Tensor, Tensor]] = {}

    # ---- tokens --------------------------------------------------------------------------------
    def patchify(self, x: Tensor) -> Tensor:
        """[B, F, C, h, w] -> [B, F/pt, gh*gw, C*pt*ph*pw]."""
        return patchify(x, self.patch)

    def unpatchify(self, tokens: Tensor, h: int, w: int) -> Tensor:
        """[B, Ft, gh*gw, C*pt*ph*pw] -> [B, Ft*pt, C, h, w]."""
        return unpatchify(tokens, self.patch, self.in_channels, h, w)

    def group_order(self, frames: int) -> tuple[Tensor, Tensor]:
        """Sequence order of the 2*frames groups (index into [S_0..S_{F-1}, Y_0..Y_{F-1}]) and their times."""
        idx = torch.arange(2 * frames)
        times = torch.cat([torch.arange(frames), torch.arange(frames)])
        if self.layout == "prefix":
            return idx, torch.cat([torch.arange(frames), torch.arange(frames) + frames])
        c = self.chunk_frames // self.patch[0]
        if frames % c:
            raise ValueError(f"{frames} token frames do not split into chunks of {c}; "
                             f"use a frame count that is a multiple of chunk_frames={self.chunk_frames}")
        chunks = idx.view(2, frames // c, c).transpose(0, 1).reshape(-1)   # [S_i | Y_i] per chunk
        return chunks, times[chunks]

    def _layout(self, frames: int, device: torch.device) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Memoized (order, times, target positions, target positions) for ``frames`` token frames: the sequence
        position of every group, the time of every sequence position (CPU) and where the target groups sit
        in frame order (on device, then on CPU)."""
        key = (frames, device)
        if key not in self._layouts:
            order, times = self.group_order(frames)
            target_pos = torch.argsort(order)[frames:]
            self._layouts[key] = (order.to(device), times, target_pos.to(device), target_pos)
        return self._layouts[key]

    # ---- attention plumbing ----------------------------------------------------------------------
    def _rotate_cached_keys(self, k: Tensor, chunks: list[ChunkInfo], starts: list[int],
                            grid: tuple[int, int]) -> Tensor:
        times = []
        for info, t0 in zip(chunks, starts):
            times.extend(t + t0 for t in self._layout(info.frames, k.device)[1].tolist())
        return Rope3D.rotate(k, *self.rope.tables(times, grid))

    def full_mask(self, frames: int, tokens_per_group: int) -> MaskSpec:
        if self.attention_mode == "bidirectional":
            return MaskSpec.full()
        c = self.chunk_frames // self.patch[0]
        chunk_tokens = (2 * c * tokens_per_group,) * (frames // c)
        if self.window_chunks is None:
            return MaskSpec.block_causal(chunk_tokens)
        return MaskSpec.sink_window(chunk_tokens, self.sink_chunks, self.window_chunks)

    def new_cache(self, sink: int | None = None, window: int | None | str = "default",
                  rope: str | None = None) -> KVCache:
        """A KV cache configured like this model (overridable for inference experiments)."""
        if self.attention_mode != "causal":
            raise ValueError("a KV cache needs attention_mode='causal'; a bidirectional model sees the future")
        return KVCache(self.depth, self.sink_chunks if sink is None else sink,
                       self.window_chunks if window == "default" else window, rope or self.rope_policy)

    # ---- forward ---------------------------------------------------------------------------------
    def forward(self, x: Tensor, sigma: Tensor, cond: Cond, cache: KVCache | None = None) -> Tensor:
        """x [B, F, C, h, w] noisy target, sigma [B, F] (or [B]) -> flow [B, F, C, h, w].

        With a cache, x is the next chunk; its K/V are staged in the cache and written by
        ``cache.commit()`` (call it after the pass that should be remembered, usually sigma = 0).
        """
        sigma = self._check(x, sigma, cond, cache)
        seq = self._sequence(x, sigma, cond, cache)
        if cache is None:
            mask = self.full_mask(len(seq.times) // 2, seq.tokens.shape[1] // len(seq.times))
            attn = MaskedAttention(self.attention, mask)
        else:
            attn = self._cached_attention(cache, seq.grid, x.device)
            mask = MaskSpec.full()
            cache.stage_chunk(len(seq.times) // 2, seq.tokens.shape[1])
        # Only the target groups reach the head, so the last block skips the source groups' queries and FFN
        # (where the mask allows a query subset, i.e. kind "full").
        rows = seq.targets if mask.kind == "full" else None
        out, e = self._blocks(seq.tokens, seq.sigma, seq.times, seq.grid, attn, self._text_kv(cond, cache), rows,
                              camera=seq.camera)
        n = out.shape[1] // (len(seq.times) if rows is None else len(rows))
        out = out.view(x.shape[0], -1, n, self.dim)
        out = out if rows is not None else out[:, seq.targets]
        return self._head(out, e[:, seq.targets], x, sigma, seq.warp)

    @torch.no_grad()
    def write_cache(self, x: Tensor, cond: Cond, cache: KVCache) -> None:
        """The clean pass of a finished chunk x [B, chunk_frames, C, h, w]: stages its K/V at sigma = 0 in
        ``cache`` (``cache.commit()`` then keeps them), the same K/V as ``self(x, 0, cond, cache=cache)``
        without the work that only the flow needs (the last block's queries, attention and FFN; the head)."""
        if cache is None:
            raise ValueError("write_cache needs a KV cache (model.new_cache())")
        sigma = self._check(x, torch.zeros(x.shape[:2], device=x.device), cond, cache)
        seq = self._sequence(x, sigma, cond, cache)
        cache.stage_chunk(len(seq.times) // 2, seq.tokens.shape[1])
        attn = self._cached_attention(cache, seq.grid, x.device)
        self._blocks(seq.tokens, seq.sigma, seq.times, seq.grid, attn, self._text_kv(cond, cache), stage_last=True,
                     camera=seq.camera)

    @torch.no_grad()
    def commit_and_forward(self, prev_x0: Tensor, prev_cond: Cond, x: Tensor, sigma: Tensor, cond: Cond,
                           cache: KVCache) -> Tensor:
        """The clean pass of a finished chunk and the first denoising pass of the next, as one pass.

        Streaming runs, per chunk, its denoising passes and then a clean pass (sigma = 0) whose K/V the cache
        keeps. The clean pass of chunk i and the first pass of chunk i + 1 are independent given the cache, so
        they can share every projection and FFN: ``prev_x0`` [B, c, C, h, w] (chunk i's result) attends to the
        cache as it is, its K/V are committed, and ``x`` (chunk i + 1 at ``sigma``) attends to the cache after
        that commit (:class:`~realcam.modules.processors.CommitAndAttend`). Returns the flow of ``x``, as
        ``self(x, sigma, cond, cache=cache)`` after ``write_cache(prev_x0, prev_cond, cache); cache.commit()``
        would (to float rounding); the cache then holds chunk i and has chunk i + 1's K/V staged. Needs the
        cache state of chunk i's passes (no commit since).
        """
        if prev_x0.shape != x.shape or prev_cond.source.shape != x.shape:
            raise ValueError(f"commit_and_forward takes two chunks of the same shape, got prev_x0 "
                             f"{tuple(prev_x0.shape)}, x {tuple(x.shape)}, prev_cond.source "
                             f"{tuple(prev_cond.source.shape)}")
        sigma = self._check(x, sigma, cond, cache)
        if not _same_text(prev_cond.text, cond.text):    # a new prompt: the two chunks cannot share a pass
            self.write_cache(prev_x0, prev_cond, cache)
            cache.commit()
            return self(x, sigma, cond, cache=cache)
        prev = self._sequence(prev_x0, torch.zeros_like(sigma), prev_cond, cache)
        plan = cache.plan_commit(ChunkInfo(len(prev.times) // 2, prev.tokens.shape[1], cache.next_t))
        nxt = self._sequence(x, sigma, cond, cache, plan.query_t_start, memo=False)
        attn = CommitAndAttend(self.attention, cache, self._rotator(prev.grid), self._attention_cast(x.device),
                               prev.tokens.shape[1], plan)
        out, e = self._blocks(torch.cat([prev.tokens, nxt.tokens], dim=1), torch.cat([prev.sigma, nxt.sigma], 1),
                              torch.cat([prev.times, nxt.times]), prev.grid, attn, self._text_kv(cond, cache),
                              len(prev.times) + nxt.targets, camera=_cat_groups(prev.camera, nxt.camera))
        attn.install()
        self._remember_conditioning(cache, nxt.conditioning)   # the next chunk's later passes reuse it
        return self._head(out.view(x.shape[0], len(nxt.targets), -1, self.dim), e[:, len(prev.times) + nxt.targets],
                          x, sigma, nxt.warp)

    # ---- the one path: tokens -> blocks -> head ---------------------------------------------------
    def _check(self, x: Tensor, sigma: Tensor, cond: Cond, cache: KVCache | None) -> Tensor:
        """Validate a call; sigma as [B, F]."""
        B, Fr, C = x.shape[:3]
        if C != self.in_channels:
            raise ValueError(f"x has {C} channels but the backbone expects in_channels={self.in_channels}")
        if cond.source.shape != x.shape:
            raise ValueError(f"cond.source {tuple(cond.source.shape)} must match x {tuple(x.shape)}")
        if cache is not None:
            if Fr != self.chunk_frames:
                raise ValueError(f"cached forward takes one chunk of {self.chunk_frames} frames, got {Fr}")
            if self.attention_mode != "causal":
                raise ValueError("cache given to a bidirectional model; build it with attention_mode='causal'")
        return sigma.expand(B, Fr) if sigma.dim() == 2 else sigma.view(B, 1).expand(B, Fr)

    def _sequence(self, x: Tensor, sigma: Tensor, cond: Cond, cache: KVCache | None, t_start: int | None = None,
                  memo: bool = True) -> "Sequence_":
        """x and its source as one token sequence in layout order, with per-group sigmas and times (offset by
        ``t_start``, default the cache's query start) and where the target groups sit."""
        B, Fr, _, h, w = x.shape
        pt, ph, pw = self.patch
        grid, Ft = (h // ph, w // pw), Fr // pt
        tokens = self.patch_embed(torch.cat([self.patchify(cond.source), self.patchify(x)], dim=1))
        conditioning = self._conditioning(cond, Ft, grid, tokens.dtype, cache, memo)
        stream, camera, warp, block_camera = conditioning
        order, times, targets, _ = self._layout(Ft, x.device)
        if cache is not None:
            times = times + (cache.query_t_start() if t_start is None else t_start)
        seq = (tokens + stream + camera)[:, order].reshape(B, -1, self.dim)
        group_sigma = torch.cat([torch.zeros_like(sigma[:, ::pt]), sigma[:, ::pt]], dim=1)[:, order]
        block_camera = None if block_camera is None else block_camera[:, :, order]
        return Sequence_(seq, group_sigma, times, targets, grid, warp, conditioning, block_camera)

    def _blocks(self, seq: Tensor, group_sigma: Tensor, times: Tensor, grid: tuple[int, int], attn,
                text: list | None, rows: Tensor | None = None, stage_last: bool = False,
                camera: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Run every block (the last on the groups ``rows`` alone; with ``stage_last`` it only stages its K/V)
        -> (tokens, e [B, G, D] for the head). text: every block's prompt (k, v), or None; camera: a per-block
        camera encoder's embeddings [depth, B, G, 1, D] in sequence order, or None."""
        e, mods = self._time_conditioning(group_sigma, seq.dtype)
        rope = self.rope.tables(times, grid)
        last = len(self.blocks) - 1
        for i, block in enumerate(self.blocks):
            cam = None if camera is None else (camera[i], partial(self.camera_encoder.project, i))
            if i == last and stage_last:
                attn.stage(i, *block.keys_values(seq, mods[i], cam))
                break
            seq = block(seq, mods[i], rope, attn.layer(i), rows if i == last else None,
                        None if text is None else text[i], cam)
        return seq, e

    def _head(self, out: Tensor, e: Tensor, x: Tensor, sigma: Tensor, warp) -> Tensor:
        """Target tokens [B, Ft, n, D] and their time embedding [B, Ft, D] -> the flow [B, F, C, h, w]."""
        h, w = x.shape[-2:]
        shift, scale = (self.head_modulation + e[:, :, None]).unbind(2)
        feats = self.head_norm(out) * (1 + scale[:, :, None]) + shift[:, :, None]
        out = self.unpatchify(self.head(feats), h, w)
        if self.blend_head is not None:
            logits = unpatchify(self.blend_head(feats), self.patch, self.reproject.blend_channels(), h, w)
            out = self.reproject.blend(out, logits, warp)
        if self.prediction == "x0":
            # v = eps - x0 = (x - x0) / sigma; the clamp keeps the sigma -> 0 end finite (the sigma = 0 cache
            # pass only writes K/V and its flow is never used).
            denom = sigma.clamp(min=self.min_sigma).to(torch.float32)[:, :, None, None, None]
            out = (x.float() - out.float()) / denom
        return out.to(x.dtype)

    def _cached_attention(self, cache: KVCache, grid: tuple[int, int], device: torch.device) -> CachedAttention:
        return CachedAttention(self.attention, cache, self._rotator(grid), self._attention_cast(device))

    def _rotator(self, grid: tuple[int, int]):
        return lambda k, chunks, starts: self._rotate_cached_keys(k, chunks, starts, grid)

    def _camera_embedding(self, cond: Cond, Ft: int, grid: tuple[int, int]) -> tuple[Tensor, tuple | None,
                                                                                    Tensor | None]:
        """([B, 2*Ft, n|1, D]: identity pose for the source stream, the target cameras (and the source
        reprojection, when on) for the target; the reprojection's samples for the blend, or None; a per-block
        encoder's embeddings [depth, B, 2*Ft, 1, D], or None: then the first holds the reprojection alone)."""
        pt = self.patch[0]
        source_K = cond.target_K if cond.source_K is None else cond.source_K
        tgt_c2w, tgt_K, src_K = cond.target_c2w[:, ::pt], cond.target_K[:, ::pt], source_K[:, ::pt]
        eye = torch.eye(4, device=tgt_c2w.device, dtype=tgt_c2w.dtype).expand_as(tgt_c2w)
        both = self.camera_encoder(torch.cat([eye, tgt_c2w], 1), torch.cat([src_K, tgt_K], 1), cond.image_size, grid)
        block_camera, warp = None, None
        if getattr(self.camera_encoder, "per_block", False):
            block_camera, both = both, both.new_zeros(both.shape[1:])
        if self.reproject is not None:
            tokens, warp = self.reproject(cond.source, cond.target_c2w, cond.target_K, source_K, cond.image_size,
                                          cond.camera_keep)
            both = both + torch.cat([torch.zeros_like(tokens), tokens], dim=1)     # target groups only
        if cond.camera_keep is not None:
            keep = torch.cat([torch.ones_like(both[:, :Ft, :1, :1]),
                              cond.camera_keep.view(-1, 1, 1, 1).to(both.dtype).expand(-1, Ft, 1, 1)], dim=1)
            both = both * keep
            block_camera = None if block_camera is None else block_camera * keep
        return both, warp, block_camera

    def _time_conditioning(self, group_sigma: Tensor, dtype: torch.dtype) -> tuple[Tensor, list]:
        """(e [B, G, D] for the head, every block's modulations) for per-group sigmas [B, G]; in float32 (the
        time MLP's own dtype) outside autocast with ``fp32_modulation``."""
        dev = group_sigma.device.type
        if self.fp32_modulation and dev != "meta" and torch.is_autocast_enabled(dev):
            with torch.autocast(dev, enabled=False):
                return self._time_conditioning(group_sigma, self.time_embed[0].weight.dtype)
        if self.fp32_modulation:
            dtype = self.time_embed[0].weight.dtype
        e = self.time_embed(sinusoidal_embedding(group_sigma * 1000.0, self.freq_dim).to(dtype))   # [B, G, D]
        e6 = self.time_proj(e).unflatten(-1, (6, self.dim))
        return e, [block.modulations(e6) for block in self.blocks]

    def _conditioning(self, cond: Cond, Ft: int, grid: tuple[int, int], dtype: torch.dtype,
                      cache: KVCache | None, memo: bool = True) -> tuple[Tensor, Tensor, tuple | None, Tensor | None]:
        """(stream [1, 2Ft, 1, D], camera [B, 2Ft, n|1, D]) embeddings in ``dtype``, the reprojection's samples
        for the blend (None without reprojection) and a per-block camera encoder's embeddings [depth, B, 2Ft, 1, D]
        (else None).

        Neither depends on x or sigma, and every pass of one cached chunk takes the same ``cond`` (the cache
        protocol), so the no-grad passes of a chunk share one computation: kept in ``cache.scratch``, which lives
        until the next commit, keyed on the dtype.
        """
        key = ("conditioning", dtype)
        use_memo = memo and cache is not None and not torch.is_grad_enabled()
        if use_memo and key in cache.scratch:
            return cache.scratch[key]
        stream = self.stream_embed.repeat_interleave(Ft, dim=0)[None, :, None].to(dtype)
        camera, warp, block_camera = self._camera_embedding(cond, Ft, grid)
        value = (stream, camera.to(dtype), warp, None if block_camera is None else block_camera.to(dtype))
        if use_memo:
            cache.scratch[key] = value
        return value

    def _text_kv(self, cond: Cond, cache: KVCache | None) -> list | None:
        """Every block's (k, v) of ``cond.text`` (None without text). In no-grad cached passes they are kept in
        ``cache.memo`` and reused while the prompt's values and the autocast state stay the same: computed once
        per prompt, recomputed at the first pass after a prompt change."""
        if self.text_dim is None:
            return None
        text = cond.text
        if text is None:
            raise ValueError(f"this backbone has text_dim={self.text_dim}: cond.text must hold the prompt's text "
                             f"embeddings [B, L, {self.text_dim}] (umT5 outputs; the empty prompt is umT5's output "
                             f"for \"\", not zeros)")
        if text.shape[-1] != self.text_dim or text.shape[0] != cond.source.shape[0]:
            raise ValueError(f"cond.text has shape {tuple(text.shape)}, expected [B={cond.source.shape[0]}, L, "
                             f"{self.text_dim}] (text_dim of this backbone)")
        dev = text.device.type
        state = (torch.is_autocast_enabled(dev), torch.get_autocast_dtype(dev)) if dev != "meta" else ()
        memo = cache is not None and not torch.is_grad_enabled()
        hit = cache.memo.get("text") if memo else None
        if hit is not None and hit[1] == state and _same_text(hit[0], text):
            return hit[2]
        context = self.text_embed(text)
        value = [block.cross_attn.keys_values(context) for block in self.blocks]
        if memo:
            cache.memo["text"] = (text.detach().clone(), state, value)
        return value

    @staticmethod
    def _remember_conditioning(cache: KVCache, value: tuple) -> None:
        if not torch.is_grad_enabled():
            cache.scratch[("conditioning", value[1].dtype)] = value

    def _attention_cast(self, device: torch.device) -> torch.dtype | None:
        """The dtype SDPA computes in under autocast (it casts every input to it), else None."""
        if device.type == "meta" or not torch.is_autocast_enabled(device.type):
            return None
        return torch.get_autocast_dtype(device.type) if isinstance(self.attention, SDPAAttention) else None


def _cat_groups(a: Tensor | None, b: Tensor | None) -> Tensor | None:
    """Two sequences' per-block camera embeddings [depth, B, G, 1, D] as one (None without)."""
    return None if a is None else torch.cat([a, b], dim=2)


def build_camera_encoder(name: str, dim: int, depth: int, args: dict | None) -> CameraEncoder:
    """A registered camera encoder for a backbone of width ``dim`` (and ``depth``, for a per-block one)."""
    per_block = getattr(CAMERA_ENCODERS.get(name), "per_block", False)
    return CAMERA_ENCODERS.build(name, dim=dim, **({"depth": depth} if per_block else {}), **(args or {}))


def _same_text(a: Tensor | None, b: Tensor | None) -> bool:
    """Whether two prompts (text embeddings, or None) are the same, by value."""
    if a is None or b is None:
        return a is b
    return a is b or (a.shape == b.shape and a.dtype == b.dtype and torch.equal(a, b))


class Sequence_(NamedTuple):
    """One chunk (or clip) as the blocks see it (:meth:`CrossFrameDiT._sequence`)."""
    tokens: Tensor          # [B, G*n, D] in layout order
    sigma: Tensor           # [B, G] per group
    times: Tensor           # [G] rotary time of every group (CPU)
    targets: Tensor         # [G/2] where the target groups sit, in frame order
    grid: tuple[int, int]
    warp: tuple | None      # the reprojection's samples, for the blend head
    conditioning: tuple     # (stream, camera, warp, block camera), as memoized per chunk
    camera: Tensor | None   # a per-block camera encoder's embeddings [depth, B, G, 1, D] in layout order


# ---------------------------------------------------------------------------------------------
# Presets
# ---------------------------------------------------------------------------------------------

PRESETS: dict[str, dict] = {
    # Trains in minutes on 2 CPU cores: 32x32 video through the pixel codec (factor 2) -> 12 x 16 x 16 latents,
    # 64 tokens per frame per stream (configs/teacher/tiny.yaml).
    "tiny": dict(in_channels=12, dim=128, depth=6, heads=4, ffn_dim=512, patch=(1, 2, 2), freq_dim=128,
                 prediction="x0"),
    # Wan2.1-T2V-1.3B's transformer shape (no text cross-attention): shape only, random weights.
    "wan1.3b": dict(in_channels=16, dim=1536, depth=30, heads=12, ffn_dim=8960, patch=(1, 2, 2), freq_dim=256,
                    chunk_frames=3),
    # Wan2.1's transformers with their text cross-attention and float32 modulation, plus realcam's parts; the
    # weights load with realcam.load_pretrained (docs/wan.md). 14B builds on the meta device.
    "wan2.1-t2v-1.3b": dict(in_channels=16, dim=1536, depth=30, heads=12, ffn_dim=8960, patch=(1, 2, 2),
                            freq_dim=256, text_dim=4096, chunk_frames=3, fp32_modulation=True),
    "wan2.1-t2v-14b": dict(in_channels=16, dim=5120, depth=40, heads=40, ffn_dim=13824, patch=(1, 2, 2),
                           freq_dim=256, text_dim=4096, chunk_frames=3, fp32_modulation=True),
    # The same code path at CPU-test size.
    "tiny-wan": dict(in_channels=16, dim=48, depth=2, heads=4, ffn_dim=96, patch=(1, 2, 2), freq_dim=32,
                     text_dim=32, chunk_frames=1, fp32_modulation=True),
}


def _preset_factory(name: str):
    def build(**overrides) -> CrossFrameDiT:
        return CrossFrameDiT(**{**PRESETS[name], **overrides})

    build.__name__ = f"dit_{name}".replace("-", "_").replace(".", "_")
    build.__doc__ = f"CrossFrameDiT with the {name!r} preset: {PRESETS[name]}; keyword overrides win."
    return build


for _name in PRESETS:
    BACKBONES.register(_name)(_preset_factory(_name))
