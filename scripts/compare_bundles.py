"""Student bundles (and cache-pass modes) side by side: frames pushed in alternation in one process, so the
machine's drift hits every variant alike (docs/benchmarks.md, "Fused cache pass"). Prints a table and writes
JSON.

    python scripts/compare_bundles.py realcam/assets/tiny_student /tmp/other_bundle --steps 1 4 \\
        --out docs/benchmarks/compare_bundles.json
    python scripts/compare_bundles.py realcam/assets/tiny_student --fuse off on --out docs/benchmarks/fused.json
"""
from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import torch

from realcam.bench._common import machine_info, markdown_table, push_in_turn, write_json
from realcam.streaming import StreamingGenerator


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("bundles", nargs="+", type=Path, help="student bundle folders (the first is the reference)")
    p.add_argument("--fuse", nargs="+", choices=("auto", "on", "off"), default=["auto"],
                   help="cache-pass modes to time each bundle in (auto: StreamingGenerator's default; the first "
                        "mode is the reference)")
    p.add_argument("--steps", type=int, nargs="+", default=[1, 4], help="denoising steps to time each bundle at")
    p.add_argument("--dtype", choices=("bf16", "fp32"), default="bf16")
    p.add_argument("--frames", type=int, default=150, help="timed pushes per bundle and step count")
    p.add_argument("--warmup", type=int, default=10, help="pushes before timing (fills the cache)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=Path("docs/benchmarks/compare_bundles.json"))
    args = p.parse_args()
    if len(args.bundles) * len(args.fuse) < 2:
        raise SystemExit("give at least two bundle folders, or one bundle and two --fuse modes, to compare")
    torch.set_num_threads(args.threads)
    modes = {"auto": None, "on": True, "off": False}
    gens = {(str(bundle), steps, fuse): StreamingGenerator.from_checkpoint(bundle, steps=steps, dtype=args.dtype,
                                                                           fuse_cache_pass=modes[fuse])
            for bundle in args.bundles for fuse in args.fuse for steps in args.steps}
    sizes = {gen.image_size for gen in gens.values()}
    if len(sizes) > 1:
        raise SystemExit(f"the bundles stream at different resolutions {sorted(sizes)}; compare like with like")
    times, _ = push_in_turn(gens, sizes.pop(), args.frames, args.warmup)
    rows = []
    for (bundle, steps, fuse), ts in times.items():
        ref = statistics.median(times[(str(args.bundles[0]), steps, args.fuse[0])])
        med = statistics.median(ts)
        gen = gens[(bundle, steps, fuse)]
        rows.append({"bundle": bundle, "steps": steps, "fuse": fuse, "fused_cache_pass": gen.fuse_cache_pass,
                     "ms_p50": 1e3 * med, "fps": 1 / med, "speedup": ref / med})
    print(markdown_table(["bundle", "steps", "fused cache pass", "ms per frame (p50)", "FPS", "speed-up vs first"],
                         [[r["bundle"], r["steps"], r["fused_cache_pass"], f"{r['ms_p50']:.2f}", f"{r['fps']:.1f}",
                           f"{r['speedup']:.3f}x"] for r in rows]))
    write_json({"machine": machine_info(), "threads": args.threads, "dtype": args.dtype, "frames": args.frames,
                "warmup": args.warmup, "rows": rows,
                "method": "StreamingGenerator.push end to end, one frame per bundle and step count in turn, medians"},
               args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
