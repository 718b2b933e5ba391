"""Streaming speed of this tree against another checkout of realcam (e.g. main before a refactor), timed in
alternation in one process so the machine's drift hits both alike. Prints a table and writes JSON.

The other tree's package is imported under the name ``realcam_old`` (a temporary copy with its imports renamed),
so both codes run side by side on the same bundle:

    python scripts/compare_commits.py /work/main --bundle realcam/assets/tiny_student --steps 1 4 \\
        --out docs/benchmarks/compare_commits.json
"""
from __future__ import annotations

import argparse
import importlib
import re
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

import torch

from realcam.bench._common import machine_info, markdown_table, push_in_turn, write_json
from realcam.streaming import StreamingGenerator


def import_renamed(repo: Path, name: str = "realcam_old"):
    """``repo/realcam`` imported as package ``name`` (a copy under a temp folder with its imports renamed)."""
    tmp = Path(tempfile.mkdtemp(prefix="realcam_cmp_"))
    shutil.copytree(repo / "realcam", tmp / name, ignore=shutil.ignore_patterns("__pycache__", "assets"))
    pattern = re.compile(r"\brealcam(?=[.\s])")
    for path in (tmp / name).rglob("*.py"):
        path.write_text(pattern.sub(name, path.read_text()))
    sys.path.insert(0, str(tmp))
    return importlib.import_module(f"{name}.streaming"), tmp


def renamed_bundle(bundle: Path, tmp: Path, name: str = "realcam_old") -> Path:
    """A copy of ``bundle`` whose class paths point into the renamed package."""
    out = tmp / "bundle"
    shutil.copytree(bundle, out)
    config = out / "config.yaml"
    config.write_text(re.sub(r"\brealcam\.", f"{name}.", config.read_text()))
    return out


def without_conditioning_memo(network) -> None:
    """Make ``network`` (a CrossFrameDiT) recompute its per-chunk conditioning in every pass."""
    compute = type(network)._conditioning
    network._conditioning = lambda cond, Ft, grid, dtype, cache, memo=True: compute(network, cond, Ft, grid, dtype,
                                                                                    cache, memo=False)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("old", type=Path, help="root of the other realcam checkout (holds realcam/)")
    p.add_argument("--bundle", type=Path, default=Path("realcam/assets/tiny_student"))
    p.add_argument("--steps", type=int, nargs="+", default=[1, 4])
    p.add_argument("--dtype", choices=("bf16", "fp32"), default="bf16")
    p.add_argument("--frames", type=int, default=150, help="timed pushes per variant")
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--ablate-memo", action="store_true",
                   help="also time the new code without its per-chunk conditioning memo (what the memo buys)")
    p.add_argument("--out", type=Path, default=Path("docs/benchmarks/compare_commits.json"))
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    old, tmp = import_renamed(args.old.resolve())
    old_bundle = renamed_bundle(args.bundle, tmp)
    gens = {}
    for steps in args.steps:
        gens[("old", steps)] = old.StreamingGenerator.from_checkpoint(old_bundle, steps=steps, dtype=args.dtype)
        gens[("new", steps)] = StreamingGenerator.from_checkpoint(args.bundle, steps=steps, dtype=args.dtype)
        if args.ablate_memo:
            gen = StreamingGenerator.from_checkpoint(args.bundle, steps=steps, dtype=args.dtype)
            without_conditioning_memo(gen.network)
            gens[("new, no conditioning memo", steps)] = gen
    times, outs = push_in_turn(gens, gens[("new", args.steps[0])].image_size, args.frames, args.warmup)
    rows = []
    for (code, steps), ts in times.items():
        med, ref = statistics.median(ts), statistics.median(times[("old", steps)])
        diff = max(float((a - b).abs().max()) for a, b in zip(outs[(code, steps)], outs[("old", steps)]))
        rows.append({"code": code, "steps": steps, "ms_p50": 1e3 * med, "fps": 1 / med, "speed_vs_old": ref / med,
                     "max_abs_diff_vs_old": diff})
    print(markdown_table(["code", "steps", "ms per frame (p50)", "FPS", "speed vs old",
                          "max abs diff of the warm-up frames vs old"],
                         [[r["code"], r["steps"], f"{r['ms_p50']:.2f}", f"{r['fps']:.1f}", f"{r['speed_vs_old']:.3f}x",
                           f"{r['max_abs_diff_vs_old']:.2e}"] for r in rows]))
    write_json({"machine": machine_info(), "old": str(args.old), "threads": args.threads, "dtype": args.dtype,
                "frames": args.frames, "warmup": args.warmup, "rows": rows,
                "method": "StreamingGenerator.push end to end, old and new in turn, medians"}, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
