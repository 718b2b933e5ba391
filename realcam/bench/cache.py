"""``realcam bench cache``: per-chunk latency of cached causal inference early (chunk 16) and late (chunk 1024)
in the stream, sink + window against an unbounded cache, and attention backends side by side.

Transformer forward + cache commit only (no codec, one pass per chunk). Every ratio is measured side by side
in one run, since the machines are noisy.
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from tqdm import tqdm

from realcam.bench._common import DEFAULT_OUT, autocast, machine_info
from realcam.modules.attention import MaskSpec
from realcam.modules.cond import Cond
from realcam.registry import ATTENTION_BACKENDS, BACKBONES


def tiny_chunk_inputs(model, batch: int = 1, height: int = 16, width: int = 16, device: str = "cpu"):
    """One chunk of random latents/conditions at the model's chunk size (latent grid height x width)."""
    c = model.chunk_frames
    x = torch.randn(batch, c, model.in_channels, height, width, device=device)
    K = torch.tensor([[2.0 * width, 0, width], [0, 2.0 * height, height], [0, 0, 1]], device=device)
    cond = Cond(torch.randn_like(x), torch.eye(4, device=device).repeat(batch, c, 1, 1),
                K.repeat(batch, c, 1, 1), (2 * height, 2 * width))
    return x, torch.full((batch, c), 0.5, device=device), cond


def _timed_step(model, x, sigma, cond, cache, device: str) -> float:
    t0 = time.perf_counter()
    model(x, sigma, cond, cache=cache)
    cache.commit()
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


@torch.no_grad()
def stream_latency(model, chunks: int, sink: int, window: int | None, dtype: str, device: str,
                   grid: tuple[int, int], desc: str, return_cache: bool = False):
    """Seconds per chunk (one cached forward + commit) for every chunk of a stream of ``chunks``."""
    x, sigma, cond = tiny_chunk_inputs(model, height=grid[0], width=grid[1], device=device)
    cache = model.new_cache(sink=sink, window=window)
    with autocast(device, dtype):
        times = [_timed_step(model, x, sigma, cond, cache, device)
                 for _ in tqdm(range(chunks), desc=desc, leave=False)]
    return (times, cache) if return_cache else times


@torch.no_grad()
def side_by_side(model, old_cache, young_chunks: int, rounds: int, dtype: str, device: str,
                 grid: tuple[int, int]) -> tuple[float, float]:
    """Median seconds per chunk of a young stream (starting at chunk ``young_chunks``) and of ``old_cache``,
    timed in alternation so that both see the same machine state (frequency, neighbours, allocator)."""
    x, sigma, cond = tiny_chunk_inputs(model, height=grid[0], width=grid[1], device=device)
    young = model.new_cache(sink=old_cache.sink, window=old_cache.window)
    young_times, old_times = [], []
    with autocast(device, dtype):
        for _ in range(young_chunks - 1):
            _timed_step(model, x, sigma, cond, young, device)
        for _ in range(rounds):
            young_times.append(_timed_step(model, x, sigma, cond, young, device))
            old_times.append(_timed_step(model, x, sigma, cond, old_cache, device))
    return statistics.median(young_times), statistics.median(old_times)


def _median_around(times: list[float], index: int, radius: int = 4) -> float:
    """Median latency of chunks index-radius .. index+radius (1-based chunk numbers)."""
    lo, hi = max(0, index - 1 - radius), min(len(times), index + radius)
    return statistics.median(times[lo:hi] or times[-radius:])   # a stream shorter than index: its tail


@torch.no_grad()
def backend_table(model, grid, dtype, device, chunks: int, repeats: int) -> list[dict]:
    """Each backend on (a) one cached chunk step against a full cache, (b) a full block-causal forward."""
    rows = []
    n = grid[0] * grid[1] // (model.patch[1] * model.patch[2])
    heads, head_dim = model.heads, model.dim // model.heads
    tokens = 2 * n * chunks
    q = torch.randn(1, heads, tokens, head_dim, device=device)
    k, v = torch.randn_like(q), torch.randn_like(q)
    mask = MaskSpec.block_causal((2 * n,) * chunks)
    for name in ATTENTION_BACKENDS.list():
        backend = ATTENTION_BACKENDS.build(name)
        with autocast(device, dtype):
            backend(q, k, v, mask)   # warm-up (flex compiles its block mask / kernel here)
            t0 = time.perf_counter()
            for _ in range(repeats):
                backend(q, k, v, mask)
            full = (time.perf_counter() - t0) / repeats
            model.attention = backend
            lat = stream_latency(model, 24, model.sink_chunks, model.window_chunks, dtype, device, grid, name)
        rows.append({"backend": name, "block_causal_ms": 1e3 * full, "tokens": tokens,
                     "cached_chunk_ms": 1e3 * statistics.median(lat[8:])})
    return rows


def plot_latency(curves: dict[str, list[float]], path: Path, args: argparse.Namespace) -> Path:
    """Per-chunk latency over the stream (a running median keeps scheduler noise out of the picture)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.5), dpi=120)
    for label, times in curves.items():
        ms = torch.tensor(times) * 1e3
        k = 9
        smooth = torch.stack([ms[max(0, i - k // 2): i + k // 2 + 1].median() for i in range(len(ms))])
        ax.plot(range(1, len(ms) + 1), smooth.numpy(), label=label)
    ax.set_xscale("log")
    ax.set_xlabel("chunk index in the stream")
    ax.set_ylabel("latency per chunk (ms)")
    ax.set_title(f"cached streaming, preset {args.preset}, {args.dtype}, sink={args.sink} window={args.window}")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def bench_cache(args: argparse.Namespace) -> dict:
    torch.manual_seed(0)
    device = args.device
    model = BACKBONES.build(args.preset, attention_mode="causal", sink_chunks=args.sink,
                            window_chunks=args.window, attention=args.attention).to(device).eval()
    grid = tuple(args.grid)
    result: dict = {"benchmark": "cache", "preset": args.preset, "device": device, "dtype": args.dtype,
                    "grid": grid, "chunk_frames": model.chunk_frames, "sink": args.sink, "window": args.window,
                    "attention": args.attention, "chunks": args.chunks, "machine": machine_info(),
                    "includes": "transformer forward + cache commit; no codec encode/decode",
                    "method": "ratio = median latency of a stream at chunk N over one at chunk 16, the two timed in "
                              "alternation; the sequential_* fields and the plot come from the single long run"}
    rows, curves = [], {}
    runs = [("sink+window", args.window, args.chunks)]
    if args.unbounded_chunks:   # its total cost is quadratic, so it runs a shorter stream
        runs.append(("unbounded", None, args.unbounded_chunks))
    for label, window, chunks in runs:
        times, cache = stream_latency(model, chunks, args.sink, window, args.dtype, device, grid, label,
                                      return_cache=True)
        curves[label] = times
        # The headline ratio: chunk ~16 and chunk ~N timed in alternation (robust to machine drift).
        early, late = side_by_side(model, cache, 16, args.rounds, args.dtype, device, grid)
        rows.append({"cache": label, "window": window, "chunks": chunks, "chunk16_ms": 1e3 * early,
                     "last_chunk_ms": 1e3 * late, "ratio": late / early,
                     "sequential_chunk16_ms": 1e3 * _median_around(times, 16),
                     "sequential_last_chunk_ms": 1e3 * _median_around(times, chunks)})
    result["latency"] = rows
    if args.plot:
        result["plot"] = str(plot_latency(curves, args.out.with_suffix(".png"), args))
    result["backends"] = backend_table(model, grid, args.dtype, device, chunks=args.backend_chunks,
                                       repeats=args.repeats)

    print(f"\nrealcam bench cache — preset={args.preset} dtype={args.dtype} device={device} "
          f"sink={args.sink} window={args.window} ({result['machine']['threads']} threads)")
    print(f"{'cache':<12} {'chunk 16 (ms)':>14} {'last chunk':>11} {'(ms)':>8} {'ratio':>7}")
    for r in rows:
        print(f"{r['cache']:<12} {r['chunk16_ms']:>14.2f} {'#' + str(r['chunks']):>11} {r['last_chunk_ms']:>8.2f} "
              f"{r['ratio']:>7.2f}")
    print(f"\n{'backend':<8} {'block-causal fwd (ms)':>22} {'cached chunk (ms)':>18}   ({result['backends'][0]['tokens']} tokens)")
    for r in result["backends"]:
        print(f"{r['backend']:<8} {r['block_causal_ms']:>22.2f} {r['cached_chunk_ms']:>18.2f}")
    return result


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", default="tiny")
    p.add_argument("--chunks", type=int, default=1024)
    p.add_argument("--sink", type=int, default=1)
    p.add_argument("--window", type=int, default=6)
    p.add_argument("--grid", type=int, nargs=2, default=(16, 16), help="latent height width")
    p.add_argument("--attention", default="sdpa")
    p.add_argument("--dtype", choices=("bf16", "fp32"), default="bf16")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--rounds", type=int, default=32, help="alternating timed steps for the side-by-side ratio")
    p.add_argument("--unbounded-chunks", type=int, default=256,
                   help="stream length for the unbounded-cache contrast (0 skips it)")
    p.add_argument("--backend-chunks", type=int, default=8, help="chunks in the backend comparison sequence")
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--out", type=Path, default=DEFAULT_OUT / "cache.json")
    p.add_argument("--plot", action=argparse.BooleanOptionalAction, default=True,
                   help="also save the latency-over-stream plot next to the JSON (.png)")
