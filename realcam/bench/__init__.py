"""``realcam bench``: speed measurements that print a table and write JSON (never timed tests).

  realcam bench [all] [--quick]   the streaming student against its 50-step teachers, one run (suite.py):
                                  FPS, constant latency, seconds per video, time to first frame, attention
                                  backends, achieved FLOP/s; JSON + plots in docs/benchmarks/, tables in
                                  docs/benchmarks.md
  realcam bench cache             per-chunk transformer latency early vs late in the stream (cache.py)
  realcam bench transformer       transformer-only FPS of a preset, e.g. wan1.3b on a GPU (transformer.py)
  realcam bench gpu               the first check on a GPU machine (scripts/gpu_check.sh): wan2.1-t2v-1.3b
                                  streaming FPS at 480x832, the Wan VAE's, 5 training steps of each system,
                                  peak memory; tiny-wan on a CPU (gpu.py)

Every ratio is measured side by side in one run, since the machines are noisy.
"""
from __future__ import annotations

import argparse
import sys

from realcam.bench import cache, gpu, suite, transformer
from realcam.atomic import check_outputs
from realcam.bench._common import write_json

COMMANDS = {
    "all": (suite, "the streaming student against its teachers, every section in one run"),
    "cache": (cache, "per-chunk latency early vs late in the stream; attention backends"),
    "transformer": (transformer, "transformer-only streaming FPS of a preset (wan1.3b on a GPU)"),
    "gpu": (gpu, "first check on a GPU machine: Wan 1.3B streaming, VAE, training steps, peak memory"),
}


def main(argv: list[str]) -> int:
    argv = list(argv)
    if not argv or (argv[0].startswith("-") and argv[0] not in ("-h", "--help")):
        argv = ["all", *argv]          # `realcam bench --quick` runs the suite
    parser = argparse.ArgumentParser(prog="realcam bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="which", required=True)
    for name, (module, help_text) in COMMANDS.items():
        module.add_arguments(sub.add_parser(name, help=help_text, description=module.__doc__,
                                            formatter_class=argparse.RawDescriptionHelpFormatter))
    args = parser.parse_args(argv)
    try:
        # before any timing: a bad --out must not cost a run of minutes
        check_outputs({"--out": getattr(args, "out", None)}, {"--student": getattr(args, "student", None)},
                      suffixes={"--out": ".json"})
        if args.which == "cache":
            result = cache.bench_cache(args)
            write_json(result, args.out)
            print(f"\nwrote {args.out}")
        else:
            result = COMMANDS[args.which][0].main(args)
            if isinstance(result, dict) and result.get("failed"):
                print(f"realcam bench {args.which}: failed items: {', '.join(result['failed'])}", file=sys.stderr)
                return 1
    except (ValueError, FileNotFoundError) as err:
        print(f"realcam bench {args.which}: error: {err}", file=sys.stderr)
        return 2
    return 0
