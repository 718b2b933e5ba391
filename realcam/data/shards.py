"""WebDataset tar shards of LoopSequences: the sample format, an atomic shard writer, a reader and a checker.

One tar member per field, WebDataset style (``KEY.FIELD.EXT``, all members of a sample adjacent)::

    KEY.json             metadata: format_version, key, scene_id, strategy, length T, height H, width W,
                         frame_format (frame_crf for mp4), metadata (the sequence's own dict)
    KEY.source.npy       uint8   [T, H, W, 3]   (or KEY.source.png: a lossless RGB film strip [T*H, W, 3],
                                                 or KEY.source.mp4: H.264, lossless at crf 0)
    KEY.target.npy       uint8   [T, H, W, 3]   (or KEY.target.png / KEY.target.mp4)
    KEY.source_c2w.npy   float32 [T, 4, 4]      OpenCV camera-to-world, metres
    KEY.target_c2w.npy   float32 [T, 4, 4]
    KEY.source_k.npy     float32 [T, 3, 3]      intrinsics in pixels (lower-case k: WebDataset lower-cases suffixes)
    KEY.target_k.npy     float32 [T, 3, 3]
    KEY.revisit.npy      int64   [T]            m for a revisit n -> m, -1 elsewhere

Tars are written with fixed member metadata (mtime 0, uid 0, mode 644), so the same sequences give byte-identical
shards. A shard is written as ``.PREFIX-NNNNNN.tar.tmp`` and renamed to ``PREFIX-NNNNNN.tar`` only when complete.
The full description, with a plain tar + numpy example, is docs/data.md.
"""
from __future__ import annotations

import glob
import hashlib
import io
import json
import os
import re
import tarfile
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np
import webdataset as wds

from realcam.atomic import write_atomic
from realcam.data.loopaug import LoopSequence

FORMAT_VERSION = 1
FRAME_FORMATS = ("npy", "png", "mp4")
DEFAULT_FRAME_CRF = 10       # mp4 frames: H.264 4:4:4 at crf 10 (about 47 dB on real 480p video); 0 = lossless
ARRAY_FIELDS = {  # tar suffix -> (LoopSequence field, dtype, trailing shape)
    "source_c2w.npy": ("source_c2w", np.float32, (4, 4)),
    "target_c2w.npy": ("target_c2w", np.float32, (4, 4)),
    "source_k.npy": ("source_K", np.float32, (3, 3)),
    "target_k.npy": ("target_K", np.float32, (3, 3)),
}
_NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class ShardError(Exception):
    """A shard or one of its samples cannot be read; ``shard`` and ``key`` say where (key may be None)."""

    def __init__(self, shard: str, key: str | None, reason: str):
        self.shard, self.key, self.reason = str(shard), key, reason
        where = f"{self.shard}" + (f" sample {key!r}" if key is not None else "")
        super().__init__(f"{where}: {reason}")


# -- names ----------------------------------------------------------------------------------------------------
def check_name(name: str, what: str) -> str:
    """Keys and prefixes must be plain words: a dot would split a WebDataset key, a slash would make a folder."""
    if not _NAME_RE.match(name) or name.startswith("__"):
        raise ValueError(f"{what} {name!r} is invalid: use 1-64 letters, digits, '-' or '_' (no dots, no slashes)")
    return name


def shard_name(prefix: str, index: int) -> str:
    return f"{prefix}-{index:06d}.tar"


def temp_shard_name(prefix: str, index: int) -> str:
    # Leading dot and trailing .tmp: neither `prefix-*.tar` globs nor `prefix-{000000..N}.tar` braces match it.
    return f".{prefix}-{index:06d}.tar.tmp"


# -- sample encoding ------------------------------------------------------------------------------------------
def revisit_to_array(revisit: Mapping[int, int], length: int) -> np.ndarray:
    """{n: m} -> int64 [T] with m at n and -1 elsewhere."""
    out = np.full(length, -1, dtype=np.int64)
    for n, m in revisit.items():
        out[int(n)] = int(m)
    return out


def revisit_from_array(revisit: np.ndarray) -> dict[int, int]:
    return {int(n): int(m) for n, m in enumerate(np.asarray(revisit).tolist()) if m >= 0}


def _json_default(x: Any) -> Any:
    if hasattr(x, "tolist"):  # numpy arrays / scalars and torch tensors in metadata
        return x.tolist()
    raise TypeError(f"metadata value of type {type(x).__name__} is not JSON-serializable")


def _npy_bytes(x: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(x), allow_pickle=False)
    return buf.getvalue()


def _png_bytes(frames: np.ndarray) -> bytes:
    from PIL import Image

    T, H, W, _ = frames.shape
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(frames).reshape(T * H, W, 3), mode="RGB").save(buf, format="PNG")
    return buf.getvalue()


def check_frame_format(frame_format: str, frame_crf: int) -> None:
    if frame_format not in FRAME_FORMATS:
        raise ValueError(f"frame_format {frame_format!r} is unknown: expected one of {FRAME_FORMATS}")
    if not 0 <= int(frame_crf) <= 51:
        raise ValueError(f"frame_crf={frame_crf}: expected 0 (lossless) to 51 (used by frame_format mp4)")


def encode_sample(seq: LoopSequence, key: str, frame_format: str = "npy",
                  frame_crf: int = DEFAULT_FRAME_CRF) -> list[tuple[str, bytes]]:
    """The tar members of one sample, in write order: ``[(f"{key}.{suffix}", bytes), ...]``."""
    from realcam.data.video import encode_video_bytes

    check_name(key, "sample key")
    check_frame_format(frame_format, frame_crf)
    T, H, W = seq.num_steps, *seq.image_size
    meta = dict(format_version=FORMAT_VERSION, key=key, scene_id=seq.scene_id, strategy=seq.strategy,
                length=T, height=H, width=W, frame_format=frame_format, metadata=seq.metadata)
    if frame_format == "mp4":
        meta["frame_crf"] = int(frame_crf)
    entries = [("json", json.dumps(meta, sort_keys=True, separators=(",", ":"), default=_json_default).encode())]
    encoders = {"npy": _npy_bytes, "png": _png_bytes, "mp4": lambda x: encode_video_bytes(x, crf=int(frame_crf))}
    for stream in ("source", "target"):
        frames = getattr(seq, f"{stream}_frames").cpu().numpy()
        entries.append((f"{stream}.{frame_format}", encoders[frame_format](frames)))
    for suffix, (field, dtype, _) in ARRAY_FIELDS.items():
        entries.append((suffix, _npy_bytes(getattr(seq, field).cpu().numpy().astype(dtype, copy=False))))
    entries.append(("revisit.npy", _npy_bytes(revisit_to_array(seq.revisit, T))))
    return [(f"{key}.{suffix}", data) for suffix, data in entries]


def _load_npy(data: bytes, suffix: str, dtype: Any, shape: tuple[int, ...]) -> np.ndarray:
    try:
        x = np.load(io.BytesIO(data), allow_pickle=False)
    except Exception as err:  # truncated header, garbage bytes, pickled objects
        raise ValueError(f"{suffix} is not a readable .npy array ({type(err).__name__}: {err})") from None
    if x.dtype != dtype or x.shape != shape:
        raise ValueError(f"{suffix} has dtype {x.dtype} shape {x.shape}: expected {np.dtype(dtype)} {shape}")
    return x


def _load_png_strip(data: bytes, suffix: str, shape: tuple[int, int, int, int]) -> np.ndarray:
    from PIL import Image

    T, H, W, _ = shape
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            mode, x = img.mode, np.array(img)  # a writable copy (torch warns on read-only arrays)
    except Exception as err:
        raise ValueError(f"{suffix} is not a readable PNG ({type(err).__name__}: {err})") from None
    if mode != "RGB" or x.shape != (T * H, W, 3):
        raise ValueError(f"{suffix} is a {mode} image of shape {x.shape}: expected an RGB strip {(T * H, W, 3)}")
    return x.reshape(shape)


def _load_mp4(data: bytes, suffix: str, shape: tuple[int, int, int, int]) -> np.ndarray:
    from realcam.data.video import decode_video_bytes

    try:
        x = decode_video_bytes(data)
    except ValueError as err:
        raise ValueError(f"{suffix} is {err}") from None
    if x.shape != shape:
        raise ValueError(f"{suffix} decodes to {x.shape[0]} frames of {x.shape[1]}x{x.shape[2]}: expected "
                         f"{shape[0]} of {shape[1]}x{shape[2]} (a truncated or replaced video)")
    return x


FRAME_LOADERS = {"npy": lambda data, suffix, shape: _load_npy(data, suffix, np.uint8, shape),
                 "png": _load_png_strip, "mp4": _load_mp4}


def decode_sample(entries: Mapping[str, bytes], key: str = "?") -> LoopSequence:
    """Members of one sample (suffix -> bytes, e.g. ``{"json": b"...", "source.npy": b"...", ...}``) -> LoopSequence.

    Raises ValueError naming the member for anything missing, unreadable, mis-shaped or inconsistent; the
    LoopSequence constructor then validates poses (rigid c2w), intrinsics and the revisit map.
    """
    if "json" not in entries:
        raise ValueError(f"sample {key!r} has no json member (has {sorted(entries)})")
    try:
        meta = json.loads(entries["json"])
        T, H, W, fmt = int(meta["length"]), int(meta["height"]), int(meta["width"]), meta["frame_format"]
    except Exception as err:
        raise ValueError(f"sample {key!r}: json is broken ({type(err).__name__}: {err})") from None
    if meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"sample {key!r}: format_version {meta.get('format_version')} != {FORMAT_VERSION}")
    if fmt not in FRAME_FORMATS or min(T, H, W) < 1:
        raise ValueError(f"sample {key!r}: json has frame_format={fmt!r} length={T} size={H}x{W}")
    needed = [f"source.{fmt}", f"target.{fmt}", *ARRAY_FIELDS, "revisit.npy"]
    missing = [s for s in needed if s not in entries]
    if missing:
        raise ValueError(f"sample {key!r} is missing members {missing} (has {sorted(entries)})")
    arrays: dict[str, Any] = {}
    for stream in ("source", "target"):
        suffix, data = f"{stream}.{fmt}", entries[f"{stream}.{fmt}"]
        arrays[f"{stream}_frames"] = FRAME_LOADERS[fmt](data, suffix, (T, H, W, 3))
    for suffix, (field, dtype, tail) in ARRAY_FIELDS.items():
        arrays[field] = _load_npy(entries[suffix], suffix, dtype, (T, *tail))
    revisit = _load_npy(entries["revisit.npy"], "revisit.npy", np.int64, (T,))
    bad = [n for n, m in enumerate(revisit.tolist()) if not -1 <= m < n]
    if bad:
        raise ValueError(f"sample {key!r}: revisit.npy[{bad[0]}] = {revisit[bad[0]]}: need -1 or 0 <= m < n")
    return LoopSequence.from_dict(dict(arrays, revisit=revisit_from_array(revisit),
                                       strategy=meta.get("strategy", "none"), scene_id=meta.get("scene_id", ""),
                                       metadata=meta.get("metadata", {})))


# -- writer ---------------------------------------------------------------------------------------------------
class ShardWriter:
    """Writes samples into ``out_dir/PREFIX-NNNNNN.tar``, ``samples_per_shard`` per shard, each atomically.

    ``webdataset.ShardWriter`` does the tars (fixed member metadata: mtime 0, uid 0, mode 644, no user names);
    realcam adds what it promises on top: every shard is written to a temporary name, fsynced and renamed only
    when complete. Use as a context manager. An exception inside the ``with`` deletes the unfinished temporary
    shard; a killed process leaves only a ``.PREFIX-NNNNNN.tar.tmp`` that no reader pattern matches. ``shards``
    lists the finished shards: ``{"name", "num_samples", "keys", "bytes", "sha256"}``.
    """

    def __init__(self, out_dir: str | Path, prefix: str = "train", samples_per_shard: int = 64,
                 frame_format: str = "npy", start_index: int = 0, frame_crf: int = DEFAULT_FRAME_CRF):
        if samples_per_shard < 1:
            raise ValueError(f"samples_per_shard={samples_per_shard}: expected >= 1")
        check_frame_format(frame_format, frame_crf)
        self.out_dir, self.prefix = Path(out_dir), check_name(prefix, "shard prefix")
        self.samples_per_shard, self.frame_format, self.start_index = samples_per_shard, frame_format, start_index
        self.frame_crf = int(frame_crf)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.shards: list[dict[str, Any]] = []
        self._writer: Any = None      # the webdataset.ShardWriter, made at the first sample (no empty shard)
        self._file: Any = None        # the open temporary file of the current shard
        self._keys: list[str] = []
        self._all_keys: set[str] = set()

    def write(self, key: str, seq: LoopSequence) -> None:
        # Encode first: a bad sample never opens a shard.
        self.write_members(key, encode_sample(seq, key, self.frame_format, self.frame_crf))

    def write_members(self, key: str, members: list[tuple[str, bytes]]) -> None:
        """Append one sample given as ready-made tar members ``[(f"{key}.{suffix}", bytes), ...]``."""
        check_name(key, "sample key")
        if key in self._all_keys:
            raise ValueError(f"sample key {key!r} was already written by this writer: keys must be unique")
        sample = {"__key__": key, **{name[len(key) + 1:]: data for name, data in members}}
        if self._writer is None:
            self._writer = wds.ShardWriter(str(self.out_dir / f"{self.prefix}-%06d.tar"), self.samples_per_shard,
                                           maxsize=float("inf"), start_shard=self.start_index, verbose=0,
                                           opener=self._open, post=self._finish, encoder=False, mode=0o644,
                                           user="", group="", mtime=0)
        self._all_keys.add(key)
        self._writer.write(sample)
        self._keys.append(key)
        if len(self._keys) >= self.samples_per_shard:  # finish now, not at the next sample: a kill keeps it
            self._writer.finish()

    def _open(self, fname: str) -> Any:
        path = Path(fname)
        self._file = _HashingFile(open(path.with_name(f".{path.name}.tmp"), "wb"))
        return self._file

    def _finish(self, fname: str) -> None:
        """``post`` of the webdataset writer, after the tar's end-of-archive blocks: fsync, then rename."""
        path, f = Path(fname), self._file
        f.flush()
        os.fsync(f.fileno())
        f.close()
        os.replace(path.with_name(f".{path.name}.tmp"), path)
        self.shards.append(dict(name=path.name, num_samples=len(self._keys), keys=list(self._keys), bytes=f.size,
                                sha256=f.hash.hexdigest()))
        self._file, self._keys = None, []

    def abort(self) -> None:
        """Drop the unfinished shard (finished ones stay: each is complete on its own)."""
        if self._file is not None:
            self._file.discard = True   # the abandoned tar stream still flushes when it is collected
            self._file.close()
        index = self.start_index + len(self.shards)
        # Unconditionally: an interrupt can land after open() made the file but before it was recorded.
        (self.out_dir / temp_shard_name(self.prefix, index)).unlink(missing_ok=True)
        self._writer, self._file, self._keys = None, None, []

    def close(self) -> None:
        if self._writer is not None and self._file is not None:
            self._writer.finish()
        self._writer = None

    def __enter__(self) -> "ShardWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.abort() if exc_type is not None else self.close()


class _HashingFile:
    """A write-only file wrapper that feeds a sha256 and a byte count as bytes go out (no second read)."""

    def __init__(self, f: Any):
        self._f, self.hash, self.size, self.discard = f, hashlib.sha256(), 0, False

    def write(self, data: bytes) -> int:
        if self.discard:
            return len(data)
        self.hash.update(data)
        self.size += len(data)
        return self._f.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._f, name)


def write_shards(sequences: Iterable[tuple[str, LoopSequence]], out_dir: str | Path, prefix: str = "train",
                 samples_per_shard: int = 64, frame_format: str = "npy",
                 frame_crf: int = DEFAULT_FRAME_CRF) -> list[dict[str, Any]]:
    """Write ``(key, sequence)`` pairs into shards; returns the shard list (see :class:`ShardWriter`)."""
    with ShardWriter(out_dir, prefix, samples_per_shard, frame_format, frame_crf=frame_crf) as writer:
        for key, seq in sequences:
            writer.write(key, seq)
    return writer.shards


# -- reader ---------------------------------------------------------------------------------------------------
def iter_shard(path: str | Path) -> Iterator[tuple[str, dict[str, bytes]]]:
    """Stream ``(key, {suffix: bytes})`` per sample from one tar (a path or any webdataset URL), in order.

    Strict where webdataset's reader is lenient (this is the checker's reader; training reads through webdataset):
    a tar cut between two members reads as a complete one to ``tarfile``, so the end-of-archive marker is checked.

    Raises :class:`ShardError` naming the shard and the sample being read when the tar is truncated or
    garbled; samples before that point have already been yielded.
    """
    path = str(path)
    key: str | None = None
    entries: dict[str, bytes] = {}
    try:
        with open_shard(path) as f, tarfile.open(fileobj=f, mode="r|") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                base, _, suffix = member.name.rpartition("/")[2].partition(".")
                if not suffix or base.startswith("__"):
                    continue
                if base != key:
                    if key is not None:
                        yield key, entries
                    key, entries = base, {}
                if suffix in entries:
                    raise ShardError(path, key, f"duplicate member {member.name!r}")
                entries[suffix] = tar.extractfile(member).read()
            # tarfile takes a file cut exactly between members for a normal end; a complete tar ends with
            # zero blocks (the end-of-archive marker), so look for one where the members stopped.
            f.seek(tar.offset)
            trailer = f.read(tarfile.BLOCKSIZE)
    except (tarfile.TarError, OSError, EOFError) as err:
        raise ShardError(path, key, f"unreadable tar after this point ({type(err).__name__}: {err})") from err
    if key is not None:
        yield key, entries
    if len(trailer) < tarfile.BLOCKSIZE or trailer.count(0) != tarfile.BLOCKSIZE:
        raise ShardError(path, None, f"truncated: the tar has no end-of-archive marker after sample {key!r}")


def read_shard(path: str | Path) -> Iterator[tuple[str, LoopSequence]]:
    """``(key, LoopSequence)`` per sample; a broken sample raises :class:`ShardError` with its key."""
    for key, entries in iter_shard(path):
        try:
            yield key, decode_sample(entries, key)
        except (ValueError, TypeError) as err:
            raise ShardError(str(path), key, str(err)) from err


def is_remote(url: str) -> bool:
    """A webdataset URL (``pipe:CMD``, ``http(s)://...``, ``s3://...``) rather than a local path."""
    return re.match(r"^[A-Za-z][A-Za-z0-9+.-]*:", str(url)) is not None and not os.path.exists(str(url))


def open_shard(url: str) -> Any:
    """A seekable binary file of one shard: a local path is opened; any other webdataset URL is read whole through
    ``webdataset.gopen`` (``pipe:`` runs the command, http(s) runs curl)."""
    if not is_remote(url):
        return open(url, "rb")
    with wds.gopen(url, "rb") as stream:
        return io.BytesIO(stream.read())


def expand_urls(urls: str | Sequence[str], argument: str) -> list[str]:
    """Shard URLs from anything webdataset reads (brace patterns ``dir/train-{000000..000009}.tar``, ``pipe:CMD``,
    ``http(s)://``, ``::``-joined lists), plus, for local paths, a glob or a directory (all its ``*.tar``;
    temporary ``.*.tar.tmp`` files never match), or a list of those.

    Every local path must exist; the error names ``argument`` (e.g. ``val_shards``) so a YAML typo is obvious.
    Remote URLs are checked when they are read.
    """
    patterns = [urls] if isinstance(urls, (str, os.PathLike)) else list(urls)
    out: list[str] = []
    for pattern in patterns:
        for path in wds.shardlists.expand_urls(str(pattern)):
            if is_remote(path):
                out.append(path)
                continue
            if os.path.isdir(path):
                found = sorted(glob.glob(os.path.join(path, "*.tar")))
                if not found:
                    raise FileNotFoundError(f"{argument}: directory {path!r} holds no .tar shards; make some with "
                                            f"`realcam data make-shards --out {path}`")
                out.extend(found)
                continue
            found = sorted(glob.glob(path)) if glob.has_magic(path) else [path]
            if not found or not all(os.path.isfile(p) for p in found):
                missing = next((p for p in found if not os.path.isfile(p)), path)
                raise FileNotFoundError(f"{argument}: shard {missing!r} does not exist (from pattern {pattern!r}); "
                                        f"make shards with `realcam data make-shards --out DIR` or fix the path")
            out.extend(found)
    if not out:
        raise ValueError(f"{argument} is empty: give shard paths or a brace pattern like "
                         f"'DIR/train-{{000000..000003}}.tar'")
    return out


# -- index.json -------------------------------------------------------------------------------------
INDEX_NAME = "index.json"
INDEX_FORMAT = "realcam-loopseq-shards"


def read_index(directory: str | Path) -> dict[str, Any]:
    """``DIR/index.json`` (``{"format", "format_version", "splits": {split: summary}}``); empty splits if absent.
    ``directory`` may be an http(s) URL too (fetched through ``webdataset.gopen``, i.e. curl)."""
    path = f"{str(directory).rstrip('/')}/{INDEX_NAME}" if is_remote(str(directory)) else Path(directory) / INDEX_NAME
    try:
        with wds.gopen(str(path), "rb") as f:   # gopen opens local files too; curl fails at close on a 404
            text = f.read()
    except OSError:
        return {"format": INDEX_FORMAT, "format_version": FORMAT_VERSION, "splits": {}}
    index = json.loads(text)
    if index.get("format") != INDEX_FORMAT or not isinstance(index.get("splits"), dict):
        raise ValueError(f"{path} is not a realcam shard index (format={index.get('format')!r})")
    return index


def write_index(directory: str | Path, split: str, summary: dict[str, Any]) -> Path:
    """Set ``splits[split]`` in ``DIR/index.json``, keeping the other splits; written atomically too."""
    directory = Path(directory)
    index = read_index(directory)
    index["splits"][split] = summary
    index["splits"] = dict(sorted(index["splits"].items()))
    return write_atomic(directory / INDEX_NAME, json.dumps(index, indent=1, sort_keys=True) + "\n")


def shard_index(urls: Sequence[str]) -> dict[str, dict[str, Any]]:
    """index.json entries (``{"name", "num_samples", "keys", ...}``) by shard name, from the folder of the first
    URL (local or http(s)); ``{}`` where there is none (``pipe:`` and other command URLs have no folder)."""
    first = str(urls[0])
    if is_remote(first) and not first.startswith(("http://", "https://")):
        return {}
    index = read_index(os.path.dirname(first) or ".")
    return {s["name"]: s for split in index["splits"].values() for s in split.get("shards", [])}
