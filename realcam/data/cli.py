"""``realcam data {make-shards, check, bench}``: parse the arguments, then call the library.

    realcam data make-shards --source synthetic --loopaug pingpong,orbit_return,none --num-sequences 256 \\
        --out data/tiny --lengths 8,12,16 --height 64 --width 64 --split train
    realcam data make-shards ... --split val      # held-out scenes: the split salts every scene seed
    realcam data check data/tiny
    realcam data bench --out bench.json
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from realcam.atomic import check_outputs
from realcam.data.make import make_shards
from realcam.data.check import check_shards
from realcam.data.shards import DEFAULT_FRAME_CRF, FRAME_FORMATS
from realcam.registry import LOOPAUG_STRATEGIES, MULTIVIEW_SOURCES


# -- argument parsing ---------------------------------------------------------------------------------------------
def _int_list(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of integers, e.g. 8,12,16")


def at_least(low: int):
    """An argparse type: an integer >= ``low`` (the realcam commands share it)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"{value} must be >= {low}")
        return value
    return parse


def _size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not HxW, e.g. 480x832") from None
    if min(h, w) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: height and width must be >= 1")
    return h, w


def crf_value(text: str) -> int:
    """An argparse type: an H.264 crf, 0 to 51."""
    value = at_least(0)(text)
    if value > 51:
        raise argparse.ArgumentTypeError(f"{value} is above 51, the largest H.264 crf")
    return value


def _json_dict(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise argparse.ArgumentTypeError(f"{text!r} is not JSON ({err}); e.g. '{{\"num_cameras\": 4}}'")
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"{text!r} must be a JSON object")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="realcam data", description="Make, check and benchmark LoopSequence "
                                     "shards (format: docs/data.md), and make the student's ODE pairs.")
    sub = parser.add_subparsers(dest="command", required=True)

    mk = sub.add_parser("make-shards", help="render LoopAug sequences into WebDataset tar shards")
    mk.add_argument("--source", default="synthetic", help=f"multiview source ({', '.join(MULTIVIEW_SOURCES.list())})")
    mk.add_argument("--source-args", type=_json_dict, default={}, help="extra source arguments as a JSON object")
    mk.add_argument("--loopaug", default="pingpong,orbit_return,none",
                    help=f"comma-separated strategies ({', '.join(LOOPAUG_STRATEGIES.list())})")
    mk.add_argument("--loopaug-args", type=_json_dict, default={},
                    help='per-strategy arguments, e.g. \'{"orbit_return": {"laps": 3}}\'')
    mk.add_argument("--num-sequences", type=int, required=True)
    mk.add_argument("--out", required=True, help="output directory (shards + index.json)")
    mk.add_argument("--seed", type=int, default=0)
    length = mk.add_mutually_exclusive_group()
    length.add_argument("--length", type=at_least(1), help="steps per sequence (default 16)")
    length.add_argument("--lengths", type=_int_list, help="several lengths, used equally often, e.g. 8,12,16")
    mk.add_argument("--height", type=int, default=64)
    mk.add_argument("--width", type=int, default=64)
    mk.add_argument("--samples-per-shard", type=int, default=64)
    mk.add_argument("--split", default="train", help="shard prefix and scene salt: train, val or test")
    mk.add_argument("--frame-format", choices=FRAME_FORMATS, default="npy",
                    help="npy: raw arrays (fastest); png: lossless film strips (~half the bytes); mp4: H.264, "
                         "lossy at --frame-crf > 0 (smallest by far on real video), lossless at 0")
    mk.add_argument("--frame-crf", type=crf_value, default=DEFAULT_FRAME_CRF,
                    help=f"mp4 quality, 0 (lossless) to 51; default {DEFAULT_FRAME_CRF}")
    mk.add_argument("--overwrite", action="store_true", help="replace existing shards of this split")
    mk.add_argument("--workers", type=at_least(0), default=0,
                    help="processes that render and encode (0: this one); the shards are the same either way")
    mk.add_argument("--quiet", action="store_true", help="no progress bar")

    ck = sub.add_parser("check", help="decode and validate every sample; non-zero exit if anything is bad")
    ck.add_argument("dir", help="a folder of shards, or shard URLs in any webdataset form: a brace pattern, "
                                "'pipe:CMD', 'http(s)://HOST/train-{000000..000007}.tar'")
    ck.add_argument("--frame-tol", type=float, default=1.0,
                    help="allowed mean |difference| (uint8 levels) between target frames at a revisit")
    ck.add_argument("--lossy-frame-tol", type=float, default=4.0,
                    help="the same for lossy frames (--frame-format mp4 at --frame-crf > 0)")
    ck.add_argument("--workers", type=at_least(0), default=0,
                    help="processes that read shards (0: this one); the report is the same either way")

    bn = sub.add_parser("bench", help="renderer (clips/s) and loader (samples/s) throughput")
    bn.add_argument("--out", help="write the results as JSON here")
    bn.add_argument("--height", type=at_least(1), default=64)
    bn.add_argument("--width", type=at_least(1), default=64)
    bn.add_argument("--length", type=at_least(1), default=16)
    bn.add_argument("--num-samples", type=at_least(1), default=64)
    bn.add_argument("--batch-size", type=at_least(1), default=8)
    bn.add_argument("--workers", type=_int_list, default=[0, 2], help="num_workers values to time, e.g. 0,2")
    bn.add_argument("--render-repeats", type=at_least(1), default=5)
    bn.add_argument("--codec-video", help="also time the shard frame formats on this real video")
    bn.add_argument("--codec-size", type=_size, default=None, help="HxW to resize it to, e.g. 480x832")
    bn.add_argument("--codec-frames", type=at_least(1), default=81, help="its first N frames (default 81)")
    bn.add_argument("--latents", action="store_true", help="instead: the training loader on frames vs on "
                    "precomputed latents of the same samples (realcam/data/bench_latents.py); use --length 1 + 4k")

    # Listed here for --help only: realcam.cli sends `data encode` to realcam.encode_cli (it runs the VAE and umT5).
    sub.add_parser("encode", add_help=False, help="VAE latents and umT5 text embeddings of shards, into new shards "
                   "(realcam data encode --help)")
    # Listed here for --help only: realcam.cli sends `data make-ode-pairs` to realcam.systems.ode_cli, which has
    # the options (it needs a teacher, so model code, which realcam.data does not import).
    sub.add_parser("make-ode-pairs", add_help=False,
                   help="run a trained teacher's sampler over shards and store (noisy, clean) ODE pairs for the "
                        "student's ODE initialization (realcam data make-ode-pairs --help)")
    return parser


def _check(directory: str, frame_tol: float, lossy_frame_tol: float, workers: int = 0) -> int:
    report = check_shards(directory, frame_tol=frame_tol, lossy_frame_tol=lossy_frame_tol, workers=workers)
    for bad in report["bad"]:
        where = bad["shard"] + (f" {bad['key']}" if bad["key"] is not None else "")
        print(f"BAD  {where}: {bad['reason']}")
    for name in report["temp_files"]:
        print(f"note {name}: unfinished temporary shard (an interrupted write); no reader matches it")
    lengths = ", ".join(f"T={k}: {v}" for k, v in report["lengths"].items()) or "-"
    strategies = ", ".join(f"{k}: {v}" for k, v in report["strategies"].items()) or "-"
    status = f"{len(report['bad'])} problem(s)" if report["bad"] else "all good"
    print(f"{directory}: {report['shards']} shards, {report['samples']} valid samples ({lengths}; {strategies}); "
          f"{status}")
    return 1 if report["bad"] or report["shards"] == 0 else 0


def main(argv: list[str]) -> int:
    if argv[:1] == ["encode"]:
        print("realcam data encode: run it as `realcam data encode ...` (or realcam.encode_cli.main)", file=sys.stderr)
        return 2
    if argv[:1] == ["make-ode-pairs"]:
        # Needs a teacher, so model code: realcam.cli dispatches it to realcam.systems.ode_cli (data/ imports no
        # model). Reaching it here means this function was called directly.
        print("realcam data make-ode-pairs: run it as `realcam data make-ode-pairs ...` "
              "(or realcam.systems.ode_cli.main)", file=sys.stderr)
        return 2
    args = build_parser().parse_args(argv)
    try:
        if args.command == "make-shards":
            root = args.source_args.get("root") if isinstance(args.source_args, dict) else None
            check_outputs({"--out": args.out}, {"--source-args root": root}, folders=("--out",))
            summary = make_shards(args.out, args.num_sequences, source=args.source, source_args=args.source_args,
                                  strategies=[s.strip() for s in args.loopaug.split(",") if s.strip()],
                                  strategy_args=args.loopaug_args,
                                  lengths=args.lengths or [args.length or 16], height=args.height,
                                  width=args.width, seed=args.seed, split=args.split,
                                  samples_per_shard=args.samples_per_shard, frame_format=args.frame_format,
                                  frame_crf=args.frame_crf,
                                  overwrite=args.overwrite, progress=not args.quiet, workers=args.workers)
            print(f"wrote {summary['num_sequences']} sequences in {summary['num_shards']} shards: "
                  f"{Path(args.out) / summary['pattern']} (index: {Path(args.out) / 'index.json'})")
            return 0
        if args.command == "check":
            return _check(args.dir, args.frame_tol, args.lossy_frame_tol, args.workers)
        from realcam.data.bench import run_bench

        check_outputs({"--out": args.out}, {"--codec-video": args.codec_video}, suffixes={"--out": ".json"})
        if args.latents:
            from realcam.data.bench_latents import run_latent_bench

            run_latent_bench(out=args.out, height=args.height, width=args.width, length=args.length,
                             num_samples=args.num_samples, batch_size=args.batch_size, workers=args.workers)
            return 0
        run_bench(out=args.out, height=args.height, width=args.width, length=args.length,
                  num_samples=args.num_samples, batch_size=args.batch_size, workers=args.workers,
                  render_repeats=args.render_repeats, codec_video=args.codec_video,
                  codec_size=args.codec_size, codec_frames=args.codec_frames)
        return 0
    except (ValueError, FileExistsError, FileNotFoundError, KeyError) as err:
        print(f"realcam data {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if args.command != "make-shards":
            raise
        done = sorted(p.name for p in Path(args.out).glob(f"{args.split}-*.tar"))
        print(f"\nrealcam data make-shards: interrupted. {len(done)} complete {args.split} shard(s) kept in "
              f"{args.out} (each whole; the unfinished one was removed); index.json was not updated for this "
              f"run, so run the command again with --overwrite", file=sys.stderr)
        return 130
