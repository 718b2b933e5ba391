"""Memory per GPU and step time of the wan1.3b teacher fine-tune and of Self-Forcing DMD under FSDP, estimated from
the preset's parameters (counted on the meta device) and the FLOPs of its matmuls: prints a table, writes JSON.
docs/scale.md quotes it.

    python scripts/scale_estimate.py --out docs/benchmarks/scale_estimate.json

Estimates, not measurements: the step times assume a model FLOP utilization (``--mfu``) of a dense bf16 peak
(``--peak-tflops``, H100/H200 SXM: 989); `bash scripts/gpu_check.sh` measures the real numbers on a GPU.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from realcam.atomic import write_atomic  # noqa: E402
from realcam.registry import BACKBONES  # noqa: E402

GB = 1e9


def count_params(preset: str) -> dict[str, int]:
    """Parameters of the preset built on ``meta`` (no memory): all, and those of one DiT block."""
    with torch.device("meta"):
        model = BACKBONES.build(preset)
    return {"total": sum(p.numel() for p in model.parameters()),
            "block": sum(p.numel() for p in model.blocks[0].parameters()), "depth": len(model.blocks),
            "dim": model.dim, "ffn_dim": model.blocks[0].ffn[0].out_features}


def linear_flops(p: dict, queries: int, text: int) -> float:
    """Forward FLOPs of one DiT block's weight matmuls (2 per multiply-add) for ``queries`` tokens and ``text``
    prompt tokens: self-attention q k v o, cross-attention q o, FFN per token; cross-attention k v per prompt token."""
    D, F = p["dim"], p["ffn_dim"]
    return queries * 2 * (4 * D * D + 2 * D * D + 2 * D * F) + text * 2 * 2 * D * D


def attention_flops(p: dict, queries: int, keys: int, text: int) -> float:
    """Forward FLOPs of one block's two attention products (QK^T, AV), self- and cross-attention."""
    return 2 * 2 * p["dim"] * queries * (keys + text)


def pass_flops(p: dict, queries: int, keys: int, text: int) -> float:
    """Forward FLOPs of the DiT blocks for ``queries`` tokens attending to ``keys`` tokens and ``text`` prompt
    tokens (embedders and head are negligible)."""
    return p["depth"] * (linear_flops(p, queries, text) + attention_flops(p, queries, keys, text))


def activation_bytes(p: dict, tokens: int) -> float:
    """Activations a block keeps for its backward, per pass, in bf16: q k v, attention out, o, the two norms and
    modulated inputs, cross-attention q and out, the FFN input and its two hidden tensors, the residuals: about
    13 D + 2 F values per token."""
    return 2 * tokens * (13 * p["dim"] + 2 * p["ffn_dim"])


def estimate(preset: str, frames: int, grid: tuple[int, int], text: int, chunk: int, sink: int, window: int,
             steps: int, critic_ratio: int, gpus: list[int], global_batch: int, peak_tflops: float,
             mfu: float) -> dict:
    p = count_params(preset)
    P, depth, D = p["total"], p["depth"], p["dim"]
    n = grid[0] * grid[1] // 4                       # tokens per latent frame (patch 2 x 2)
    video = 2 * frames * n                           # source + target, interleaved
    chunk_tokens = 2 * chunk * n
    chunks = -(-frames // chunk)
    cache_tokens = (sink + window + 1) * chunk_tokens
    full = pass_flops(p, video, video, text)         # a bidirectional pass over the whole video
    cached = pass_flops(p, chunk_tokens, cache_tokens, text)    # one chunk against a full cache (upper bound)
    mean_exit = (steps + 1) / 2                      # the exit step s* is uniform over the student's steps
    rollout = chunks * (mean_exit + 1) * cached      # denoising passes up to s*, then the clean cache pass
    flops = {
        # forward, backward (2x), and the forward again under activation checkpointing
        "teacher_step": 4 * full,
        # generator turn: rollout (+ backward 2x and the recomputation through the exit passes), real score with
        # guidance (2 passes), critic score (1); every iteration: a no-grad rollout and the critic's flow-matching
        # step (4 passes)
        "dmd_generator_turn": rollout + 3 * chunks * cached + 3 * full,
        "dmd_critic_turn": rollout + 4 * full,
    }
    flops["dmd_iteration_mean"] = flops["dmd_critic_turn"] + flops["dmd_generator_turn"] / critic_ratio
    # K and V of every layer: K float32 (under bf16 autocast, norm_k's float32 weight promotes it), V bf16
    kv_bytes = D * (4 + 2)
    kv_cache = depth * cache_tokens * kv_bytes
    # the K/V of every chunk some later exit pass attends to, every layer, held once for the recomputations
    # (KVCache.keep_chunk_kv: the passes share them)
    pinned_kv = sum(1 for c in range(chunks - 1) if c < sink or window > 0) * depth * chunk_tokens * kv_bytes
    rows = []
    for g in gpus:
        shard = 1 / g
        # fp32 weights (Lightning's bf16-mixed: autocast, fp32 master), fp32 grads, AdamW's two moments, EMA
        teacher_states = P * (4 + 4 + 8 + 4) * shard
        gathered = 2 * 4 * p["block"]                # the block being computed and the next, prefetched
        teacher_act = depth * video * D * 4 + activation_bytes(p, video)    # checkpoints + one block recomputed
        dmd_states = P * ((4 + 4 + 8 + 4) + (4 + 4 + 8) + 4) * shard       # generator + EMA, critic, real score
        critic_act = depth * video * D * 4 + activation_bytes(p, video)    # the critic's checkpointed step
        # the exit passes, checkpointed (realcam.systems.sharding.checkpoint_block): every block's input and the
        # past K/V pinned from forward time for the recomputation, plus one block recomputed; uncheckpointed,
        # each pass keeps its whole graph, with the past K/V its attention saves (one concatenation per pass)
        exit_ckpt = chunks * depth * chunk_tokens * D * 4 + pinned_kv + activation_bytes(p, chunk_tokens)
        attended = sum(min(c, sink + window) for c in range(chunks)) * depth * chunk_tokens * kv_bytes
        exit_plain = chunks * depth * activation_bytes(p, chunk_tokens) + attended
        dmd_act, dmd_act_plain = max(exit_ckpt, critic_act), max(exit_plain, critic_act)
        seconds = {k: v * global_batch / (g * peak_tflops * 1e12 * mfu) for k, v in flops.items()}
        rows.append({"gpus": g, "teacher_gb": (teacher_states + gathered + teacher_act) / GB,
                     "teacher_states_gb": teacher_states / GB, "teacher_activations_gb": teacher_act / GB,
                     "dmd_gb": (dmd_states + gathered + dmd_act + kv_cache) / GB, "dmd_states_gb": dmd_states / GB,
                     "dmd_activations_gb": dmd_act / GB, "dmd_pinned_kv_gb": pinned_kv / GB,
                     "kv_cache_gb": kv_cache / GB,
                     "dmd_gb_exit_passes_uncheckpointed": (dmd_states + gathered + dmd_act_plain + kv_cache) / GB,
                     "teacher_step_s": seconds["teacher_step"], "dmd_iteration_s": seconds["dmd_iteration_mean"]})
    return {"preset": preset, "params": p, "latent_frames": frames, "latent_grid": list(grid),
            "tokens": {"video": video, "chunk": chunk_tokens, "cache": cache_tokens, "text": text},
            "tflops_per_sample": {k: v / 1e12 for k, v in flops.items()}, "global_batch": global_batch,
            "peak_tflops": peak_tflops, "mfu": mfu, "per_gpu": rows}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="wan2.1-t2v-1.3b")
    ap.add_argument("--frames", type=int, default=21, help="latent frames per clip (81 video frames)")
    ap.add_argument("--grid", type=int, nargs=2, default=(60, 104), help="latent height width (480x832 / 8)")
    ap.add_argument("--text", type=int, default=512, help="prompt tokens (Wan pads to 512)")
    ap.add_argument("--chunk", type=int, default=3)
    ap.add_argument("--sink", type=int, default=1)
    ap.add_argument("--window", type=int, default=3)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--critic-ratio", type=int, default=5)
    ap.add_argument("--gpus", type=int, nargs="+", default=[8, 64])
    ap.add_argument("--global-batch", type=int, default=64)
    ap.add_argument("--peak-tflops", type=float, default=989.0, help="dense bf16 peak of one GPU")
    ap.add_argument("--mfu", type=float, default=0.35, help="assumed model FLOP utilization")
    ap.add_argument("--out", default=None, help="JSON output path")
    a = ap.parse_args(argv)
    result = estimate(a.preset, a.frames, tuple(a.grid), a.text, a.chunk, a.sink, a.window, a.steps,
                      a.critic_ratio, a.gpus, a.global_batch, a.peak_tflops, a.mfu)
    p, t = result["params"], result["tflops_per_sample"]
    print(f"{a.preset}: {p['total'] / 1e6:.1f} M parameters ({p['depth']} blocks of {p['block'] / 1e6:.1f} M); "
          f"{result['tokens']['video']} video tokens; TFLOP per sample: teacher step {t['teacher_step']:.0f}, "
          f"DMD iteration {t['dmd_iteration_mean']:.0f} (mean over the {a.critic_ratio}:1 cycle)")
    print(f"{'GPUs':>5} {'teacher GB/GPU':>15} {'DMD GB/GPU':>11} {'(pinned K/V)':>12} {'teacher step s':>15} "
          f"{'DMD iteration s':>16}")
    for r in result["per_gpu"]:
        print(f"{r['gpus']:>5} {r['teacher_gb']:>15.1f} {r['dmd_gb']:>11.1f} {r['dmd_pinned_kv_gb']:>12.1f} "
              f"{r['teacher_step_s']:>15.1f} {r['dmd_iteration_s']:>16.1f}")
    print(f"(global batch {a.global_batch}, {a.mfu:.0%} of {a.peak_tflops:.0f} TFLOP/s per GPU)")
    if a.out:
        write_atomic(a.out, json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
