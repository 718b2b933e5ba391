"""A Wan-shaped diffusion transformer over interleaved source/target frames.

Top to bottom: embedders, the model, presets; the block (and its cached attention paths) is in
:mod:`realcam.modules.block`, the streaming-only passes (the fused cache pass, the isolated source) in
:mod:`realcam.modules.streaming_passes`. Every call follows the denoiser
protocol ``model(x, sigma, cond, cache=None) -> flow`` with x [B, F, C, h, w] the noisy target
latents, sigma [B, F] per target frame (source tokens are always clean, sigma = 0) and flow = eps - x0.

The sequence is a list of *groups*, one per (stream, token frame), each a (gh x gw) token grid:
- ``interleaved`` (RealCam): per chunk ``[S_i | Y_i]``, the source and target frames of one instant
  share their time index, so the model is length-agnostic and ready for causal attention;
- ``prefix`` (ReCamMaster ablation): ``[S_1..S_T, Y_1..Y_T]``, target times offset by T,
  bidirectional only.
"""
from __future__ import annotations

import contextlib
import math
from typing import Iterator, Literal, Sequence

import torch
from torch import Tensor, nn

from realcam.modules.attention import AttentionBackend, MaskSpec, SDPAAttention
from realcam.modules.block import DiTBlock
from realcam.modules.cache import KVCache, ChunkInfo
from realcam.modules.camera import CameraEncoder
from realcam.modules.cond import Cond
from realcam.modules.patches import patchify, unpatchify
from realcam.modules.reproject import SourceReprojection
from realcam.modules.rope import Rope3D
from realcam.modules.streaming_passes import StreamingPasses, autocast_state
from realcam.registry import ATTENTION_BACKENDS, BACKBONES, CAMERA_ENCODERS

TIME_MEMO_SIZE = 16     # distinct sigma sets remembered (a student cycles through 5)

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
class CrossFrameDiT(StreamingPasses, nn.Module):
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
        isolate_source: causal models only: a chunk's source tokens do not attend to its target tokens (they
            still see every visible earlier chunk, source and target). The source's K/V then do not depend on
            the noisy target, so cached inference computes them once per chunk, in its first pass, and every
            later pass (further denoising steps, the cache pass) processes the target tokens alone.
        prediction: what the head predicts. ``flow`` (Wan) outputs v directly. ``x0`` predicts the clean
            latents and returns v = (x - x0) / max(sigma, min_sigma): the right choice when a patch has more
            features than the width (pixel codecs), since a narrow network cannot carry the noise through to v.
            ``x0_precond`` predicts x0 with EDM-style preconditioning (skip from x, unit-variance target; see
            :meth:`precond_flow`, scaled by ``sigma_data``): x0's advantage at high sigma without having to
            rebuild every pixel through the network at low sigma.
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
        prediction: Literal["flow", "x0", "x0_precond"] = "flow",
        reproject_depths: Sequence[float] | None = None,
        reproject_hidden: int | None = None,
        reproject_space_to_depth: int = 1,
        reproject_blend: bool = False,
        reproject_copy_gate: float = 0.0,
        min_sigma: float = 0.05,
        sigma_data: float = 0.5,
        eps: float = 1e-6,
        isolate_source: bool = False,
    ):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim={dim} is not divisible by heads={heads}")
        if layout == "prefix" and attention_mode != "bidirectional":
            raise ValueError("layout='prefix' needs the whole source first, so it only supports "
                             "attention_mode='bidirectional'; use layout='interleaved' for causal models")
        if isolate_source and (attention_mode != "causal" or layout != "interleaved"):
            raise ValueError(f"isolate_source=True needs attention_mode='causal' and layout='interleaved' (got "
                             f"{attention_mode!r}, {layout!r}); a bidirectional model's source sees every target")
        self.isolate_source = bool(isolate_source)
        if chunk_frames % patch[0]:
            raise ValueError(f"chunk_frames={chunk_frames} must be a multiple of the temporal patch {patch[0]}")
        self.in_channels, self.dim, self.depth, self.heads = in_channels, dim, depth, heads
        self.patch, self.chunk_frames, self.layout = tuple(patch), chunk_frames, layout
        self.attention_mode, self.sink_chunks, self.window_chunks = attention_mode, sink_chunks, window_chunks
        self.rope_policy, self.freq_dim = rope_policy, freq_dim
        if prediction not in ("flow", "x0", "x0_precond"):
            raise ValueError(f"prediction={prediction!r}: choose 'flow', 'x0' or 'x0_precond'")
        if not sigma_data > 0:
            raise ValueError(f"sigma_data={sigma_data} must be > 0 (the per-element std of the clean latents)")
        self.prediction, self.min_sigma, self.sigma_data = prediction, min_sigma, float(sigma_data)
        pt, ph, pw = self.patch
        patch_feats = in_channels * pt * ph * pw

        self.patch_embed = nn.Linear(patch_feats, dim)
        self.stream_embed = nn.Parameter(torch.randn(2, dim) * 0.02)   # 0 = source, 1 = target
        self.time_embed = nn.Sequential(nn.Linear(freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.time_proj = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))
        nn.init.zeros_(self.time_proj[1].weight)
        nn.init.zeros_(self.time_proj[1].bias)
        self.blocks = nn.ModuleList(DiTBlock(dim, heads, ffn_dim, eps) for _ in range(depth))
        self.head_norm = nn.LayerNorm(dim, eps=eps, elementwise_affine=False)
        self.head_modulation = nn.Parameter(torch.zeros(1, 1, 2, dim))
        self.head = nn.Linear(dim, patch_feats)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)
        self.rope = Rope3D(dim // heads, rope_theta)

        if isinstance(camera_encoder, str):
            camera_encoder = CAMERA_ENCODERS.build(camera_encoder, dim=dim, **(camera_encoder_args or {}))
        if getattr(camera_encoder, "dim", dim) != dim:
            raise ValueError(f"camera_encoder.dim={camera_encoder.dim} does not match the backbone dim={dim}; "
                             f"set init_args.dim: {dim}")
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
        self._time_memo: dict[tuple, tuple[Tensor, list]] = {}
        self._blend_capture: list | None = None

    @contextlib.contextmanager
    def capture_blend(self) -> Iterator[list]:
        """Collect ``(logits, warp)`` of every forward inside the block (for a loss on the blend's choice,
        e.g. :func:`realcam.losses.blend_selection_loss`); the list is empty without ``reproject_blend``."""
        if self._blend_capture is not None:
            raise RuntimeError("capture_blend() is already active on this backbone")
        self._blend_capture = captured = []
        try:
            yield captured
        finally:
            self._blend_capture = None

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
        source = c * tokens_per_group if self.isolate_source else 0
        if self.window_chunks is None:
            return MaskSpec.block_causal(chunk_tokens, source)
        return MaskSpec.sink_window(chunk_tokens, self.sink_chunks, self.window_chunks, source)

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
        return self._run(x, sigma, cond, cache)

    @torch.no_grad()
    def write_cache(self, x: Tensor, cond: Cond, cache: KVCache) -> None:
        """The clean pass of a finished chunk x [B, chunk_frames, C, h, w]: stages its K/V at sigma = 0 in
        ``cache`` (``cache.commit()`` then keeps them), the same K/V as ``self(x, 0, cond, cache=cache)``
        without the work that only the flow needs (the last block's queries, attention and FFN; the head)."""
        self._run(x, torch.zeros(x.shape[:2], device=x.device), cond, cache, stage_only=True)

    def _run(self, x: Tensor, sigma: Tensor, cond: Cond, cache: KVCache | None, stage_only: bool = False):
        B, Fr, C, h, w = x.shape
        if C != self.in_channels:
            raise ValueError(f"x has {C} channels but the backbone expects in_channels={self.in_channels}")
        if cond.source.shape != x.shape:
            raise ValueError(f"cond.source {tuple(cond.source.shape)} must match x {tuple(x.shape)}")
        sigma = sigma.expand(B, Fr) if sigma.dim() == 2 else sigma.view(B, 1).expand(B, Fr)
        pt, ph, pw = self.patch
        grid = (h // ph, w // pw)
        n = grid[0] * grid[1]
        Ft = Fr // pt

        if cache is not None:
            if Fr != self.chunk_frames:
                raise ValueError(f"cached forward takes one chunk of {self.chunk_frames} frames, got {Fr}")
            if self.attention_mode != "causal":
                raise ValueError("cache given to a bidirectional model; build it with attention_mode='causal'")
        elif stage_only:
            raise ValueError("write_cache needs a KV cache (model.new_cache())")
        if cache is not None and self.isolate_source:
            return self._run_isolated(x, sigma, cond, cache, stage_only)

        tokens = self.patch_embed(torch.cat([self.patchify(cond.source), self.patchify(x)], dim=1))
        stream, camera, warp = self._conditioning(cond, Ft, grid, tokens.dtype, cache)
        tokens = tokens + stream + camera     # [B, 2Ft, n, D]

        order, times, target_pos, target_pos_cpu = self._layout(Ft, x.device)
        if cache is not None:
            times = times + cache.query_t_start()
            cache.stage_chunk(Ft, 2 * Ft * n)
        seq = tokens[:, order].reshape(B, 2 * Ft * n, self.dim)
        group_sigma = torch.cat([torch.zeros_like(sigma[:, ::pt]), sigma[:, ::pt]], dim=1)[:, order]
        e, mods = self._time_conditioning(group_sigma, seq.dtype, cache is not None and not torch.is_grad_enabled())
        rope = self.rope.tables(times, grid)

        mask = MaskSpec.full() if cache is not None else self.full_mask(Ft, n)
        attend = lambda q, k, v: self.attention(q, k, v, mask)  # noqa: E731
        rotate = lambda k, chunks, starts: self._rotate_cached_keys(k, chunks, starts, grid)  # noqa: E731
        attn_cast = self._attention_cast(x.device) if cache is not None else None
        # Only the target groups reach the head, so the last block skips the source groups' queries and FFN
        # (where the mask allows a query subset, i.e. kind "full"), and the clean cache pass all but its K/V.
        keep = target_pos[:0] if stage_only else target_pos if mask.kind == "full" else None
        rope_q = self.rope.tables(times[target_pos_cpu], grid) if keep is not None and keep.numel() else None
        for i, block in enumerate(self.blocks):
            last = i == len(self.blocks) - 1
            seq = block(seq, mods[i], rope, attend, i, cache, rotate, attn_cast, keep if last else None,
                        rope_q if last else None)
        if stage_only:
            return None

        # Head on target groups only, in frame order.
        out = seq.view(B, Ft, n, self.dim) if keep is not None else seq.view(B, 2 * Ft, n, self.dim)[:, target_pos]
        return self._head(out, e[:, target_pos], x, sigma, warp)

    def _head(self, out: Tensor, e: Tensor, x: Tensor, sigma: Tensor, warp) -> Tensor:
        """Target tokens [B, Ft, n, D] and their time embedding [B, Ft, D] -> the flow [B, F, C, h, w]."""
        h, w = x.shape[-2:]
        shift, scale = (self.head_modulation + e[:, :, None]).unbind(2)
        feats = self.head_norm(out) * (1 + scale[:, :, None]) + shift[:, :, None]
        out = self.unpatchify(self.head(feats), h, w)
        if self.blend_head is not None:
            logits = unpatchify(self.blend_head(feats), self.patch, self.reproject.blend_channels(), h, w)
            out = self.reproject.blend(out, logits, warp)
            if self._blend_capture is not None:
                self._blend_capture.append((logits, warp))
        if self.prediction == "x0":
            # v = eps - x0 = (x - x0) / sigma; the clamp keeps the sigma -> 0 end finite (the sigma = 0 cache
            # pass only writes K/V and its flow is never used).
            denom = sigma.clamp(min=self.min_sigma).to(torch.float32)[:, :, None, None, None]
            out = (x.float() - out.float()) / denom
        elif self.prediction == "x0_precond":
            out = self.precond_flow(x.float(), out.float(), sigma.float()[:, :, None, None, None])
        return out.to(x.dtype)

    def precond_flow(self, x: Tensor, out: Tensor, sigma: Tensor) -> Tensor:
        """The flow of the preconditioned x0 estimate ``c_skip * x + c_out * out`` (EDM's scaling, written for
        x = (1 - sigma) x0 + sigma eps with clean latents of std ``sigma_data``): c_skip is the least-squares
        weight of x for x0 and c_out the std of what is left, so the network's target has unit variance at
        every sigma. At high sigma it predicts x0 outright (no noise to carry through a narrow network); at
        low sigma the skip carries the input through and the network only corrects it. Returned as
        v = (x - x0) / sigma in closed form, finite at sigma = 0 (no clamp)."""
        sd2 = self.sigma_data ** 2
        den = (1 - sigma) ** 2 * sd2 + sigma ** 2
        return x * ((sigma - (1 - sigma) * sd2) / den) - out * (self.sigma_data / den.sqrt())

    def _camera_embedding(self, cond: Cond, Ft: int, grid: tuple[int, int]) -> tuple[Tensor, tuple | None]:
        """([B, 2*Ft, n|1, D]: identity pose for the source stream, the target cameras (and the source
        reprojection, when on) for the target; the reprojection's samples for the blend, or None)."""
        pt = self.patch[0]
        source_K = cond.target_K if cond.source_K is None else cond.source_K
        tgt_c2w, tgt_K, src_K = cond.target_c2w[:, ::pt], cond.target_K[:, ::pt], source_K[:, ::pt]
        eye = torch.eye(4, device=tgt_c2w.device, dtype=tgt_c2w.dtype).expand_as(tgt_c2w)
        both = self.camera_encoder(torch.cat([eye, tgt_c2w], 1), torch.cat([src_K, tgt_K], 1), cond.image_size, grid)
        warp = None
        if self.reproject is not None:
            tokens, warp = self.reproject(cond.source, cond.target_c2w, cond.target_K, source_K, cond.image_size,
                                          cond.camera_keep)
            both = both + torch.cat([torch.zeros_like(tokens), tokens], dim=1)     # target groups only
        if cond.camera_keep is not None:
            keep = torch.cat([torch.ones_like(both[:, :Ft, :1, :1]),
                              cond.camera_keep.view(-1, 1, 1, 1).to(both.dtype).expand(-1, Ft, 1, 1)], dim=1)
            both = both * keep
        return both, warp

    def _time_conditioning(self, group_sigma: Tensor, dtype: torch.dtype, memo: bool) -> tuple[Tensor, list]:
        """(e [B, G, D] for the head, every block's modulations) for per-group sigmas [B, G].

        A student's passes cycle through the same few sigmas, so no-grad cached passes with sigmas on the CPU
        (reading them costs no device sync) reuse the result, keyed on the values, dtype, autocast state and
        parameter versions.
        """
        if memo and group_sigma.device.type == "cpu":
            params = (*self.time_embed.parameters(), *self.time_proj.parameters(), *(b.modulation for b in self.blocks))
            key = (tuple(group_sigma.shape), tuple(group_sigma.flatten().tolist()), dtype,
                   autocast_state(group_sigma.device), *(p._version for p in params), *(p.data_ptr() for p in params))
            hit = self._time_memo.get(key)
            if hit is not None:
                return hit
        e = self.time_embed(sinusoidal_embedding(group_sigma * 1000.0, self.freq_dim).to(dtype))   # [B, G, D]
        e6 = self.time_proj(e).unflatten(-1, (6, self.dim))
        value = (e, [block.modulations(e6) for block in self.blocks])
        if memo and group_sigma.device.type == "cpu":
            if len(self._time_memo) >= TIME_MEMO_SIZE:
                self._time_memo.pop(next(iter(self._time_memo)))
            self._time_memo[key] = value
        return value

    def _conditioning(self, cond: Cond, Ft: int, grid: tuple[int, int], dtype: torch.dtype,
                      cache: KVCache | None) -> tuple[Tensor, Tensor, tuple | None]:
        """(stream [1, 2Ft, 1, D], camera [B, 2Ft, n|1, D]) embeddings in ``dtype``, and the reprojection's
        samples for the blend (None without reprojection).

        Neither depends on x or sigma, so the no-grad passes of one cached chunk (4 denoising steps and the
        clean pass) share one computation, kept in ``cache.scratch`` and checked against the identity and
        version of every input (cond tensors, the parameters used) and the autocast state.
        """
        memo = cache is not None and not torch.is_grad_enabled()
        if memo:
            refs = (cond.target_c2w, cond.target_K, cond.source_K, cond.camera_keep, self.stream_embed,
                    *self.camera_encoder.parameters())
            if self.reproject is not None:      # it reads the source latents too
                refs = refs + (cond.source, *self.reproject.parameters())
            key = (cond.image_size, Ft, grid, dtype, autocast_state(cond.target_c2w.device),
                   tuple(None if t is None or t.is_inference() else t._version for t in refs))
            hit = cache.scratch.get(("conditioning", id(self)))
            if hit is not None and hit[1] == key and all(a is b for a, b in zip(hit[0], refs)):
                return hit[2]
        stream = self.stream_embed.repeat_interleave(Ft, dim=0)[None, :, None].to(dtype)
        camera, warp = self._camera_embedding(cond, Ft, grid)
        value = (stream, camera.to(dtype), warp)
        if memo:
            cache.scratch[("conditioning", id(self))] = (refs, key, value)   # refs kept alive: ids stay unique
        return value

    def _attention_cast(self, device: torch.device) -> torch.dtype | None:
        """The dtype SDPA computes in under autocast (it casts every input to it), else None."""
        if device.type == "meta" or not torch.is_autocast_enabled(device.type):
            return None
        return torch.get_autocast_dtype(device.type) if isinstance(self.attention, SDPAAttention) else None


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
}


def _preset_factory(name: str):
    def build(**overrides) -> CrossFrameDiT:
        return CrossFrameDiT(**{**PRESETS[name], **overrides})

    build.__name__ = f"dit_{name}"
    build.__doc__ = f"CrossFrameDiT with the {name!r} preset: {PRESETS[name]}; keyword overrides win."
    return build


for _name in PRESETS:
    BACKBONES.register(_name)(_preset_factory(_name))
