"""``make_shards``: render LoopAug sequences from a multiview source into shards plus index.json, byte-reproducibly,
in this process or in ``workers`` processes (``realcam data make-shards`` is its command line)."""
from __future__ import annotations

import hashlib
import inspect
from pathlib import Path
from typing import Any, Sequence

import torch

from realcam.data.shards import (DEFAULT_FRAME_CRF, ShardWriter, check_frame_format, check_name, encode_sample,
                                 write_index)
from realcam.data.workers import worker_pool
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
