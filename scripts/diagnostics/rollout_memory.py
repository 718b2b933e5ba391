"""What activation checkpointing of the cached passes saves: the memory a Self-Forcing self-rollout with an exit
step holds for its backward pass, with every DiT block checkpointed (``realcam.systems.sharding.checkpoint_block``,
cached passes included) against without, on CPU. Prints a table and writes JSON (docs/scale.md quotes it).

Each variant runs in a fresh process (Linux, /proc), twice, alternating; the smaller of the two readings is kept:
``graph MiB`` = resident memory after the rollout's forward minus before it (what the autograd graph holds,
cache and result included), ``peak MiB`` = the process's peak resident memory minus its resident memory before
the forward. Both processes also report the gradient norm, which must agree. glibc's mmap threshold is fixed so
freed blocks go back to the system and resident memory follows live tensors.

Usage, from the repository root:
    python scripts/diagnostics/rollout_memory.py --out docs/benchmarks/rollout_memory.json
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from realcam.atomic import write_atomic  # noqa: E402
from realcam.modules.block import DiTBlock  # noqa: E402
from realcam.modules.cond import Cond  # noqa: E402
from realcam.modules.flow import FlowSchedule  # noqa: E402
from realcam.registry import BACKBONES  # noqa: E402
from realcam.rollout import causal_rollout  # noqa: E402
from realcam.systems.sharding import checkpoint_block  # noqa: E402

MiB = 2 ** 20
VARIANTS = ("plain", "checkpointed")


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def measure(a: argparse.Namespace, variant: str) -> dict:
    """One rollout forward and backward in this process: memory deltas and the gradient norm."""
    torch.manual_seed(0)
    torch.set_num_threads(1)
    model = BACKBONES.build(a.preset, attention_mode="causal", chunk_frames=a.chunk, sink_chunks=a.sink,
                            window_chunks=a.window)
    with torch.no_grad():
        for p in model.parameters():          # zero-initialized gates would make every output 0
            p.copy_(torch.randn_like(p) * 0.1)
    if variant == "checkpointed":
        for block in (m for m in model.modules() if isinstance(m, DiTBlock)):
            checkpoint_block(block)
    B, (h, w), C = 1, a.grid, model.in_channels
    g = torch.Generator().manual_seed(1)
    c2w = torch.eye(4).repeat(B, a.frames, 1, 1)
    K = torch.tensor([[float(w), 0, w / 2], [0, float(w), h / 2], [0, 0, 1]]).repeat(B, a.frames, 1, 1)
    cond = Cond(source=torch.randn(B, a.frames, C, h, w, generator=g), target_c2w=c2w, target_K=K,
                image_size=(8 * h, 8 * w))
    if model.text_dim is not None:
        cond.text = torch.randn(B, 8, model.text_dim, generator=g)
    sigmas = FlowSchedule(shift=5.0).student_sigmas()
    before = rss()
    roll = causal_rollout(model, cond, sigmas, torch.Generator().manual_seed(2), exit_step=a.exit_step)
    graph = rss() - before
    roll.x0.square().mean().backward()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before
    norm = torch.stack([p.grad.norm() for p in model.parameters() if p.grad is not None]).norm()
    return {"variant": variant, "graph_mib": graph / MiB, "peak_mib": peak / MiB, "grad_norm": float(norm)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="tiny-wan")
    ap.add_argument("--frames", type=int, default=12, help="latent frames (chunks = frames / chunk)")
    ap.add_argument("--grid", type=int, nargs=2, default=(32, 48), help="latent height width")
    ap.add_argument("--chunk", type=int, default=1, help="latent frames per chunk")
    ap.add_argument("--sink", type=int, default=1)
    ap.add_argument("--window", type=int, default=3)
    ap.add_argument("--exit-step", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
    ap.add_argument("--out", default=None, help="JSON output path")
    a = ap.parse_args(argv)
    if a.child:
        print(json.dumps(measure(a, a.child)))
        return 0
    args = [arg for arg in (argv if argv is not None else sys.argv[1:])]
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", MALLOC_TRIM_THRESHOLD_="0")
    runs = {v: [] for v in VARIANTS}
    for _ in range(a.repeats):
        for v in VARIANTS:
            out = subprocess.run([sys.executable, __file__, *args, "--child", v], env=env, check=True,
                                 capture_output=True, text=True).stdout
            runs[v].append(json.loads(out.strip().splitlines()[-1]))
    best = {v: {k: min(r[k] for r in runs[v]) for k in ("graph_mib", "peak_mib")} | {"grad_norm": runs[v][0]["grad_norm"]}
            for v in VARIANTS}
    plain, ckpt = best["plain"], best["checkpointed"]
    print(f"{a.preset}, {a.frames} latent frames of {a.grid[0]}x{a.grid[1]}, chunks of {a.chunk}, sink {a.sink} + "
          f"window {a.window}, exit step {a.exit_step}")
    print(f"{'variant':>13} {'graph MiB':>10} {'peak MiB':>9} {'grad norm':>12}")
    for v in VARIANTS:
        print(f"{v:>13} {best[v]['graph_mib']:>10.1f} {best[v]['peak_mib']:>9.1f} {best[v]['grad_norm']:>12.6g}")
    ratio = {k: ckpt[k] / plain[k] for k in ("graph_mib", "peak_mib")}
    print(f"checkpointed / plain: graph {ratio['graph_mib']:.2f}, peak {ratio['peak_mib']:.2f}")
    if abs(plain["grad_norm"] - ckpt["grad_norm"]) > 1e-5 * abs(plain["grad_norm"]):
        print("gradient norms differ: checkpointing changed the computation", file=sys.stderr)
        return 1
    if a.out:
        config = {k: getattr(a, k) for k in ("preset", "frames", "grid", "chunk", "sink", "window", "exit_step")}
        write_atomic(a.out, json.dumps({"config": config, "best": best, "ratio": ratio, "runs": runs}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
