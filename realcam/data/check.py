"""``check_shards``: decode and validate every sample of a shard set against the format and index.json (the library
side of ``realcam data check``). Strict where training's webdataset reader is lenient: a tar cut exactly
between two members is caught by its missing end-of-archive marker."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Mapping

from realcam.data.loopaug import LoopSequence
from realcam.data.shards import (DEFAULT_FRAME_CRF, INDEX_NAME, ShardError, decode_sample, expand_urls, is_remote,
                                 iter_shard, open_shard, shard_index)
from realcam.data.workers import worker_pool


def sequence_problems(seq: LoopSequence, pose_atol: float = 1e-4, frame_tol: float = 1.0) -> list[str]:
    """Revisit consistency beyond what LoopSequence checks: at a revisit n -> m the target pose must match, and
    the target frames must agree to ``frame_tol`` mean absolute uint8 levels (lossless frames: equal)."""
    problems = []
    for n, m in seq.revisit.items():
        dpose = float((seq.target_c2w[n] - seq.target_c2w[m]).abs().max())
        if dpose > pose_atol:
            problems.append(f"revisit {n}->{m}: target_c2w differs by {dpose:.3g} (> {pose_atol})")
        dframe = float((seq.target_frames[n].float() - seq.target_frames[m].float()).abs().mean())
        if dframe > frame_tol:
            problems.append(f"revisit {n}->{m}: target frames differ by {dframe:.3g} levels on average")
    return problems


def is_lossy(meta: Mapping[str, Any]) -> bool:
    """Whether a sample's json says its frames went through a lossy codec (mp4 at crf > 0)."""
    return meta.get("frame_format") == "mp4" and int(meta.get("frame_crf", DEFAULT_FRAME_CRF)) > 0


def _check_shard(job: tuple[Path, Mapping[str, Any] | None], frame_tol: float,
                 lossy_frame_tol: float) -> dict[str, Any]:
    """One shard's part of :func:`check_shards` (``job``: its path and its index.json entry): ``events`` in
    reading order (``("key", key)`` for every sample read, ``("bad", {...})`` for every problem), and the counts
    of its valid samples."""
    path, entry = job
    events: list[tuple[str, Any]] = []
    lengths: dict[int, int] = {}
    strategies: dict[str, int] = {}
    keys: list[str] = []

    def problem(key: str | None, reason: str) -> None:
        events.append(("bad", dict(shard=path.name, key=key, reason=reason)))

    try:
        for key, entries in iter_shard(path):
            keys.append(key)
            events.append(("key", key))
            try:
                seq = decode_sample(entries, key)
            except (ValueError, TypeError) as err:
                problem(key, str(err))
                continue
            meta = json.loads(entries["json"])
            lossy = is_lossy(meta)
            problems = sequence_problems(seq, frame_tol=lossy_frame_tol if lossy else frame_tol)
            if problems:
                hint = (f" (mp4 frames at crf {meta.get('frame_crf')}: if the codec explains it, raise "
                        f"--lossy-frame-tol above {lossy_frame_tol})" if lossy else "")
                problem(key, "; ".join(problems) + hint)
                continue
            lengths[seq.num_steps] = lengths.get(seq.num_steps, 0) + 1
            strategies[seq.strategy] = strategies.get(seq.strategy, 0) + 1
    except ShardError as err:
        problem(err.key, err.reason)
        return dict(events=events, lengths=lengths, strategies=strategies)
    if entry is not None:
        if entry.get("keys") is not None and keys != entry["keys"]:
            problem(None, f"holds {len(keys)} samples, index.json lists {len(entry['keys'])} (keys differ): the "
                          f"shard was changed after it was written")
        elif entry.get("sha256") and hashlib.sha256(open_shard(path).read()).hexdigest() != entry["sha256"]:
            problem(None, "sha256 differs from index.json: the shard was modified after it was written")
    return dict(events=events, lengths=lengths, strategies=strategies)


class _ShardUrl(str):
    """A shard URL that also answers ``.name`` (its file name), as the checker reports shards by name."""

    @property
    def name(self) -> str:
        return self.rstrip("/").rsplit("/", 1)[-1].split()[-1]


def check_shards(directory: str | Path, frame_tol: float = 1.0, lossy_frame_tol: float = 4.0,
                 workers: int = 0) -> dict[str, Any]:
    """Decode and validate every sample of every ``*.tar`` in ``directory`` (or of the shards a webdataset URL
    names: a brace pattern, ``pipe:``, http(s)) against the format and index.json (beside them, where there is one).

    Per sample: all members present and readable, shapes/dtypes matching its json, rigid c2w and valid K
    (geometry.validate_*), a revisit map pointing back in time whose target poses and frames agree (to
    ``frame_tol`` mean uint8 levels, or ``lossy_frame_tol`` for mp4 frames at crf > 0: the codec codes a frame
    and its revisit a little differently, by about 1.5 levels at crf 10, while a wrong frame is off by tens). Per shard:
    it reads to the end, and its sample count, keys and sha256 match index.json. Returns
    ``{"shards", "samples", "bad": [{"shard", "key", "reason"}], "temp_files", "lengths", "strategies"}``.
    ``workers > 0`` checks shards in that many processes; the report is the same, in the same order.
    """
    from functools import partial

    local = Path(directory).is_dir()
    if not local and not is_remote(str(directory)) and not any(c in str(directory) for c in "{*"):
        raise FileNotFoundError(f"{directory} is not a directory of shards, a shard pattern or a webdataset URL")
    urls = sorted(str(p) for p in Path(directory).glob("*.tar")) if local else expand_urls(directory, "shards")
    bad: list[dict[str, Any]] = []
    try:
        listed = shard_index([str(Path(directory) / "x.tar")] if local else urls)
    except (ValueError, json.JSONDecodeError) as err:
        listed = {}
        bad.append(dict(shard=INDEX_NAME, key=None, reason=f"index.json is unreadable: {err}"))
    paths = [_ShardUrl(u) for u in urls]
    jobs = [(path, listed.get(path.name)) for path in paths]
    check = partial(_check_shard, frame_tol=frame_tol, lossy_frame_tol=lossy_frame_tol)
    lengths: dict[int, int] = {}
    strategies: dict[str, int] = {}
    seen: dict[str, str] = {}
    samples = 0
    with worker_pool(min(workers, len(paths)) if len(paths) > 1 else 0) as pool:
        for path, result in zip(paths, pool.imap(check, jobs) if pool else map(check, jobs)):
            for kind, value in result["events"]:
                if kind == "bad":
                    bad.append(value)
                    continue
                if value in seen:
                    bad.append(dict(shard=path.name, key=value, reason=f"duplicate key (also in {seen[value]})"))
                seen[value] = path.name
            samples += sum(result["lengths"].values())
            for k, v in result["lengths"].items():
                lengths[k] = lengths.get(k, 0) + v
            for k, v in result["strategies"].items():
                strategies[k] = strategies.get(k, 0) + v
    on_disk = {p.name for p in paths}
    for name in sorted(set(listed) - on_disk if local else ()):
        bad.append(dict(shard=name, key=None, reason="listed in index.json but missing on disk"))
    return dict(shards=len(paths), samples=samples, bad=bad, lengths=dict(sorted(lengths.items())),
                strategies=dict(sorted(strategies.items())),
                temp_files=sorted(p.name for p in Path(directory).glob(".*.tar.tmp")) if local else [])

