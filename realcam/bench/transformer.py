"""``realcam bench transformer``: transformer-only streaming FPS of any preset with random weights.

Meant for the ``wan1.3b`` preset on a GPU (480x832 video -> 60x104 latents, 3 latent frames per chunk):
``rollout_chunk`` (4 denoising passes + the cache pass) on a sink + window cache, no VAE. Wan's VAE packs 4
video frames into one latent frame (after the first), so video FPS is about 4x the latent FPS reported here.
On a CPU the full-size preset would take minutes per chunk, so it is skipped with a message unless
``--model-args`` shrinks it to a stand-in (what the tests run) or ``--allow-cpu`` insists.
"""
from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch

from realcam.device import checked_device
from realcam.bench._common import DEFAULT_OUT, autocast, build_student, machine_info, median_ms, random_cond, \
    timed, write_json
from realcam.modules.flow import FlowSchedule
from realcam.rollout import rollout_chunk

GRIDS = {"wan1.3b": (60, 104), "tiny": (16, 16)}   # latent grids of the presets' native video sizes
TEMPORAL_FACTOR = {"wan1.3b": 4, "tiny": 1}          # video frames per latent frame of their codecs


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", default="wan1.3b")
    p.add_argument("--model-args", type=json.loads, default=None,
                   help='JSON overrides of the preset, e.g. \'{"depth": 2}\' (a stand-in: recorded in the JSON)')
    p.add_argument("--grid", type=int, nargs=2, default=None, help="latent height width (default: the preset's)")
    p.add_argument("--sink", type=int, default=1)
    p.add_argument("--window", type=int, default=6)
    p.add_argument("--attention", default="sdpa")
    p.add_argument("--dtype", choices=("bf16", "fp32"), default="bf16")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--chunks", type=int, default=16, help="timed chunks (after --warmup)")
    p.add_argument("--warmup", type=int, default=None, help="chunks before timing (default sink + window + 1)")
    p.add_argument("--allow-cpu", action="store_true", help="run a GPU-sized preset on the CPU anyway")
    p.add_argument("--out", type=Path, default=None, help="JSON (default docs/benchmarks/transformer_<preset>.json)")


def main(args: argparse.Namespace) -> dict:
    out = args.out or DEFAULT_OUT / f"transformer_{args.preset}.json"
    result = measure(args)
    write_json(result, out)
    print(f"wrote {out}")
    return result


def defaults(**overrides) -> argparse.Namespace:
    """This command's arguments with their defaults (for the suite's own ``wan`` section)."""
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return argparse.Namespace(**{**vars(parser.parse_args([])), **overrides})


@torch.no_grad()
def measure(args: argparse.Namespace) -> dict:
    grid = tuple(args.grid or GRIDS.get(args.preset, (16, 16)))
    result = {"benchmark": "transformer", "preset": args.preset, "model_args": args.model_args, "grid": list(grid),
              "device": args.device, "dtype": args.dtype, "sink": args.sink, "window": args.window,
              "attention": args.attention, "weights": "random", "machine": machine_info(),
              "stand_in": bool(args.model_args),
              "includes": {"encode": False, "decode": False, "note": "transformer only (rollout_chunk), no codec"}}
    checked_device(args.device, "--device")
    if args.preset != "tiny" and args.device == "cpu" and not args.model_args and not args.allow_cpu:
        msg = (f"skipped: the {args.preset} preset at {grid[0]}x{grid[1]} latents is a GPU benchmark (minutes per "
               f"chunk on this CPU); run it with --device cuda, or shrink it with --model-args for a stand-in")
        print(f"realcam bench transformer: {msg}")
        result["skipped"] = msg
        return result
    model = build_student(args.preset, args.sink, args.window, args.attention, model_args=args.model_args,
                          device=args.device)
    c = model.chunk_frames
    _, cond = random_cond(model, c, grid, device=args.device)
    sigmas = FlowSchedule(shift=5.0).student_sigmas(device=args.device)
    cache, noise = model.new_cache(), torch.Generator().manual_seed(0)
    warmup = args.warmup if args.warmup is not None else args.sink + args.window + 1
    times = []
    with autocast(args.device, args.dtype):
        for i in range(warmup + args.chunks):
            t = timed(lambda: rollout_chunk(model, cond, sigmas, cache, noise, cond.source), args.device)
            if i >= warmup:
                times.append(t)
    chunk_s = statistics.median(times)
    tokens = 2 * c * (grid[0] // model.patch[1]) * (grid[1] // model.patch[2])
    result.update({"chunk_frames": c, "tokens_per_chunk": tokens, "params": sum(p.numel() for p in model.parameters()),
                   "chunk_ms_p50": median_ms(times), "latent_fps": c / chunk_s,
                   "video_fps_estimate": c * TEMPORAL_FACTOR.get(args.preset, 1) / chunk_s,
                   "chunks_timed": len(times), "warmup_chunks": warmup,
                   "passes_per_chunk": len(sigmas) + 1})
    print(f"realcam bench transformer — {args.preset}{' (stand-in)' if args.model_args else ''} on {args.device} "
          f"{args.dtype}: {result['chunk_ms_p50']:.1f} ms per chunk of {c} latent frames ({tokens} tokens), "
          f"{result['latent_fps']:.1f} latent frames/s")
    return result
