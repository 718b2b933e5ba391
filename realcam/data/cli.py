"""``realcam data {make-shards, check, bench}``: parse the arguments, then call the library.

    realcam data make-shards --source synthetic --loopaug pingpong,orbit_return,none --num-sequences 256 \\
        --out data/tiny --lengths 8,12,16 --height 64 --width 64 --split train
    realcam data make-shards ... --split val      # held-out scenes: the split salts every scene seed
    realcam data check data/tiny
    realcam data bench --out bench.json
"""
from __future__ import annotations

import argparse
import hashlib
import inspect
import json
import sys
from pathlib import Path
from typing import Any, Sequence

import torch

from realcam.atomic import check_outputs
from realcam.data.shards import (DEFAULT_FRAME_CRF, FRAME_FORMATS, ShardWriter, check_frame_format, check_name,
                                 check_shards, encode_sample, worker_pool, write_index)
from realcam.registry import LOOPAUG_STRATEGIES, MULTIVIEW_SOURCES


def sequence_seed(seed: int, split: str, index: int) -> int:
    """Seed of the strategy's generator for sequence ``index``: stable across processes and platforms."""
    digest = hashlib.blake2b(f"realcam-make-shards|{split}|{seed}|{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def build_source(name: str, args: dict[str, Any], *, height: int, width: int, num_frames: int, seed: int,
                 split: str) -> Any:
    """A multiview source from the registry; the common options go to it only where its signature takes them."""
    factory = MULTIVIEW_SOURCES.get(name)
    params = inspect.signature(factory).parameters
    common = dict(height=height, width=width, num_frames=num_frames, seed=seed, split=split)
    kwargs = {k: v for k, v in common.items() if k in params}
    kwargs.update(args)
    return factory(**kwargs)


class SequenceMaker:
    """Sequence ``i`` of a make-shards run -> ``(key, tar members, strategy, length, "HxW")``, the same in any
    process: the scene, strategy, length and generator all follow from ``i`` (see :func:`make_shards`).

    The source and the strategies are built on first use and not pickled, so a worker process gets the
    arguments and builds its own.
    """

    def __init__(self, source: str, source_args: dict[str, Any], strategies: list[str],
                 strategy_args: dict[str, dict[str, Any]], lengths: list[int], height: int, width: int, seed: int,
                 split: str, frame_format: str, frame_crf: int):
        self.args = dict(source=source, source_args=source_args, strategies=strategies, strategy_args=strategy_args,
                         lengths=lengths, height=height, width=width, seed=seed, split=split,
                         frame_format=frame_format, frame_crf=frame_crf)
        self._src: Any = None
        self._builders: dict[tuple[str, int], Any] = {}

    def __getstate__(self) -> dict[str, Any]:
        return {"args": self.args, "_src": None, "_builders": {}}

    def setup(self) -> "SequenceMaker":
        if self._src is None:
            a = self.args
            self._src = build_source(a["source"], a["source_args"], height=a["height"], width=a["width"],
                                     num_frames=max(a["lengths"]), seed=a["seed"], split=a["split"])
            if hasattr(self._src, "__len__") and len(self._src) == 0:
                raise ValueError(f"source {a['source']!r} with source_args {a['source_args']} has no scenes: "
                                 f"check its folder (--source-args)")
            self._builders = {(name, L): LOOPAUG_STRATEGIES.build(name, length=L,
                                                                  **a["strategy_args"].get(name, {}))
                              for name in a["strategies"] for L in a["lengths"]}
        return self

    def __call__(self, i: int) -> tuple[str, list[tuple[str, bytes]], str, int, str]:
        a, src = self.args, self.setup()._src
        strategies, lengths = a["strategies"], a["lengths"]
        name, L = strategies[i % len(strategies)], lengths[(i // len(strategies)) % len(lengths)]
        scene = i % len(src) if hasattr(src, "__len__") else i
        generator = torch.Generator().manual_seed(sequence_seed(a["seed"], a["split"], i))
        seq = self._builders[name, L](src, scene, generator)
        key = f"{a['split']}-{i:08d}"
        members = encode_sample(seq, key, a["frame_format"], a["frame_crf"])
        return key, members, name, L, "x".join(map(str, seq.image_size))


_WORKER_MAKER: SequenceMaker | None = None


def _set_worker_maker(maker: SequenceMaker) -> None:
    global _WORKER_MAKER
    _WORKER_MAKER = maker


def _make_in_worker(i: int) -> tuple[str, list[tuple[str, bytes]], str, int, str]:
    return _WORKER_MAKER(i)


def make_shards(out: str | Path, num_sequences: int, *, source: str = "synthetic",
                source_args: dict[str, Any] | None = None, strategies: Sequence[str] = ("pingpong", "orbit_return",
                                                                                        "none"),
                strategy_args: dict[str, dict[str, Any]] | None = None, lengths: Sequence[int] = (16,),
                height: int = 64, width: int = 64, seed: int = 0, split: str = "train",
                samples_per_shard: int = 64, frame_format: str = "npy", frame_crf: int = DEFAULT_FRAME_CRF,
                overwrite: bool = False, progress: bool = True, workers: int = 0) -> dict[str, Any]:
    """Render ``num_sequences`` LoopSequences into ``out/SPLIT-NNNNNN.tar`` and record them in ``out/index.json``.

    Sequence i uses strategy ``strategies[i % S]`` at length ``lengths[(i // S) % L]`` (every combination equally
    often), scene ``i`` of the source built with (seed, split), and a generator seeded from (seed, split, i):
    the same arguments give byte-identical shards, whatever ``workers`` is. ``workers > 0`` renders and
    encodes in that many processes (one torch thread each) while this one writes the tars in order. Returns
    the split's index entry.
    """
    from tqdm import tqdm

    out, split = Path(out), check_name(split, "split")
    strategies, lengths = list(strategies), [int(x) for x in lengths]
    if num_sequences < 1:
        raise ValueError(f"num_sequences={num_sequences}: expected >= 1")
    if not strategies or not lengths or min(lengths) < 1:
        raise ValueError(f"need at least one strategy and positive lengths (got {strategies}, {lengths})")
    for name in strategies:
        LOOPAUG_STRATEGIES.get(name)  # unknown names fail here, before any rendering
    check_frame_format(frame_format, frame_crf)
    out.mkdir(parents=True, exist_ok=True)
    existing = sorted(out.glob(f"{split}-*.tar"))
    if existing and not overwrite:
        raise FileExistsError(f"{out} already holds {len(existing)} {split} shards ({existing[0].name}, ...): "
                              f"pass --overwrite to replace them or choose another --out")
    for path in [*existing, *out.glob(f".{split}-*.tar.tmp")]:  # temp files are leftovers of killed runs
        path.unlink()
    if workers < 0:
        raise ValueError(f"workers={workers}: expected >= 0 (0 = this process)")
    src_args = dict(source_args or {})
    # Built here first, so a bad source or strategy argument fails before any worker starts.
    maker = SequenceMaker(source, src_args, strategies, dict(strategy_args or {}), lengths, height, width, seed,
                          split, frame_format, frame_crf).setup()
    length_counts: dict[int, int] = {}
    strategy_counts: dict[str, int] = {}
    resolutions: dict[str, int] = {}  # "HxW" -> count, as rendered (a source may ignore --height/--width)
    with worker_pool(workers, _set_worker_maker, maker) as pool:
        made = pool.imap(_make_in_worker, range(num_sequences)) if pool else map(maker, range(num_sequences))
        with ShardWriter(out, split, samples_per_shard, frame_format, frame_crf=frame_crf) as writer, \
                tqdm(total=num_sequences, desc=f"make-shards {split}", unit="seq", disable=not progress) as bar:
            for key, members, name, L, size in made:          # in order of i, whichever process made it
                writer.write_members(key, members)
                resolutions[size] = resolutions.get(size, 0) + 1
                length_counts[L] = length_counts.get(L, 0) + 1
                strategy_counts[name] = strategy_counts.get(name, 0) + 1
                bar.update()
    summary = dict(split=split, source=source, source_args=src_args, strategies=strategies,
                   strategy_args=strategy_args or {}, seed=seed, num_sequences=num_sequences, lengths=lengths,
                   length_counts={str(k): v for k, v in sorted(length_counts.items())},
                   strategy_counts=strategy_counts, height=height, width=width, resolutions=resolutions,
                   frame_format=frame_format, **({"frame_crf": int(frame_crf)} if frame_format == "mp4" else {}),
                   samples_per_shard=samples_per_shard, num_shards=len(writer.shards),
                   pattern=f"{split}-{{000000..{len(writer.shards) - 1:06d}}}.tar", shards=writer.shards)
    write_index(out, split, summary)
    return summary


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
    ck.add_argument("dir")
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
