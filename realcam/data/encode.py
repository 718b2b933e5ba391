"""Latents and text precomputed into shards, so training never runs the VAE or the text encoder.

``encode_shards`` reads LoopSequence shards (docs/data.md), encodes each sample's source and target videos with a
latent codec and its prompt with a text encoder, and writes **new** shards holding every input member unchanged
plus four more::

    KEY.latents.json          format_version, latent_shape [F, C, h, w], dtype, frames T, the codec's and the text
                              encoder's description, prompt, text_tokens L
    KEY.source_latents.npy    float16/float32 [F, C, h, w]   the codec's latents of the source video
    KEY.target_latents.npy    float16/float32 [F, C, h, w]
    KEY.text.npy              float16/float32 [L, D]         the prompt's real tokens (Wan pads to 512 on read)

and, once per output folder, ``text_empty.npy``: the encoder's output for "" (its EOS token), which
classifier-free guidance uses for the unconditional branch. ``decode_latent_sample`` turns one sample's members
back into tensors without touching the frames. Nothing here knows a model: the codec and the text encoder come in
as objects with ``encode`` (and the codec's ``latent_frames``); realcam.encode_cli builds them.
"""
from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol, Sequence

import numpy as np
import torch
from torch import Tensor

from realcam.atomic import write_atomic
from realcam.data.shards import (ARRAY_FIELDS, INDEX_NAME, ShardError, ShardWriter, _load_npy, check_name,
                                 decode_sample, iter_shard, read_index, revisit_from_array, write_index)

LATENTS_VERSION = 1
LATENT_DTYPES = {"float16": np.float16, "float32": np.float32}
TEXT_EMPTY = "text_empty.npy"
ENCODE_HINT = "encode the shards with `realcam data encode SRC --out DIR --vae PATH --text-encoder PATH --prompt ...`"


class VideoEncoder(Protocol):
    def encode(self, video: Tensor) -> Tensor: ...          # [B, T, 3, H, W] in [-1, 1] -> [B, F, C, h, w]

    def latent_frames(self, frames: int) -> int: ...        # F for T, or a ValueError naming the rule


class TextEncoder(Protocol):
    def encode(self, prompts: list[str]) -> list[Tensor]: ...   # one [L, D] per prompt


def _npy(x: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(x), allow_pickle=False)
    return buf.getvalue()


def frames_to_video(frames: Tensor) -> Tensor:
    """uint8 [T, H, W, 3] -> float32 [1, T, 3, H, W] in [-1, 1] (the DataModule's normalisation)."""
    return frames.permute(0, 3, 1, 2).float().div(127.5).sub(1.0)[None]


def prompt_for(key: str, scene_id: str, prompts: Mapping[str, str] | None, prompt: str | None) -> str:
    """The sample's prompt: ``prompts[key]``, else ``prompts[scene_id]``, else ``prompt``."""
    for name in (key, scene_id):
        if prompts and name in prompts:
            return prompts[name]
    if prompt is None:
        raise ValueError(f"sample {key!r} (scene {scene_id!r}) has no prompt: add it to --prompts (a JSON object "
                         f"from sample key or scene_id to prompt) or pass --prompt TEXT (--prompt '' for the empty "
                         f"prompt)")
    return prompt


def _source_shards(src: Path, split: str) -> list[Path]:
    shards = sorted(src.glob(f"{split}-*.tar"))
    if not shards:
        raise FileNotFoundError(f"{src} holds no {split}-*.tar shards: point SRC at a `realcam data make-shards` "
                                f"output (and --split at its split)")
    return shards


def _check_lengths(src: Path, split: str, codec: VideoEncoder) -> None:
    """Fail before any encoding when index.json lists a length the codec cannot take."""
    lengths = read_index(src)["splits"].get(split, {}).get("length_counts", {})
    for T in sorted(int(t) for t in lengths):
        try:
            codec.latent_frames(T)
        except ValueError as err:
            raise ValueError(f"{src / INDEX_NAME} lists {split} sequences of length {T}: {err}; make the shards with "
                             f"`realcam data make-shards --length N` where N fits (Wan: 81 = 1 + 4 * 20)") from None


class _Texts:
    """Prompt -> stored embedding bytes, each distinct prompt encoded once per run."""

    def __init__(self, encoder: TextEncoder, dtype: Any):
        self.encoder, self.dtype, self.memo = encoder, dtype, {}

    def __call__(self, prompt: str) -> tuple[bytes, int]:
        if prompt not in self.memo:
            emb = self.encoder.encode([prompt])[0].float().cpu().numpy().astype(self.dtype)
            self.memo[prompt] = (_npy(emb), int(emb.shape[0]))
        return self.memo[prompt]


def encode_sample_members(key: str, entries: Mapping[str, bytes], codec: VideoEncoder, *, dtype: str = "float32",
                          texts: _Texts | None = None, prompt: Callable[[str, str], str] | None = None,
                          codec_info: Any = None, text_info: Any = None,
                          device: str | torch.device = "cpu") -> list[tuple[str, bytes]]:
    """One sample's input members -> the new members (``latents.json``, the two latents, ``text.npy``);
    ``prompt(key, scene_id)`` gives its prompt when there is a text encoder."""
    if "latents.json" in entries:
        raise ValueError(f"sample {key!r} already holds latents (latents.json): encode the original make-shards "
                         f"output instead")
    seq = decode_sample(entries, key)
    try:
        frames = codec.latent_frames(seq.num_steps)
    except ValueError as err:
        raise ValueError(f"sample {key!r} has T={seq.num_steps} frames: {err}") from None
    latents = {}
    with torch.no_grad():
        for stream in ("source", "target"):
            video = frames_to_video(getattr(seq, f"{stream}_frames")).to(device)
            latents[stream] = codec.encode(video)[0].float().cpu().numpy().astype(LATENT_DTYPES[dtype])
    shape = list(latents["source"].shape)
    if shape[0] != frames:
        raise ValueError(f"sample {key!r}: the codec gave {shape[0]} latent frames for T={seq.num_steps}, its "
                         f"latent_frames() says {frames}")
    meta: dict[str, Any] = dict(format_version=LATENTS_VERSION, latent_shape=shape, dtype=dtype, frames=seq.num_steps,
                                codec=codec_info)
    members = [("source_latents.npy", _npy(latents["source"])), ("target_latents.npy", _npy(latents["target"]))]
    if texts is not None:
        text = prompt(key, seq.scene_id) if prompt is not None else ""
        data, tokens = texts(text)
        meta.update(text_encoder=text_info, prompt=text, text_tokens=tokens)
        members.append(("text.npy", data))
    head = ("latents.json", json.dumps(meta, sort_keys=True, separators=(",", ":")).encode())
    return [(f"{key}.{suffix}", data) for suffix, data in [head, *members]]


def encode_shards(src: str | Path, out: str | Path, codec: VideoEncoder, *, split: str = "train",
                  text_encoder: TextEncoder | None = None, prompt: str | None = None,
                  prompts: Mapping[str, str] | None = None, dtype: str = "float32",
                  samples_per_shard: int | None = None,
                  codec_info: Any = None, text_info: Any = None, device: str | torch.device = "cpu",
                  overwrite: bool = False, progress: bool = True) -> dict[str, Any]:
    """Encode every ``SRC/SPLIT-*.tar`` sample into ``OUT/SPLIT-NNNNNN.tar`` (input members + latents + text) and
    record the split in ``OUT/index.json``; with a text encoder also write ``OUT/text_empty.npy``. Returns the
    index entry. Shards are written atomically; ``out`` may not be ``src``."""
    from tqdm import tqdm

    src, out, split = Path(src), Path(out), check_name(split, "split")
    if dtype not in LATENT_DTYPES:
        raise ValueError(f"dtype={dtype!r}: expected one of {sorted(LATENT_DTYPES)}")
    if text_encoder is None and (prompt is not None or prompts):
        raise ValueError("a prompt was given but no text encoder: pass --text-encoder PATH (umT5) too")
    if out.exists() and src.exists() and out.resolve() == src.resolve():
        raise ValueError(f"--out {out} is the source folder: encode into a new folder (inputs are never overwritten)")
    shards = _source_shards(src, split)
    _check_lengths(src, split, codec)
    existing = sorted(out.glob(f"{split}-*.tar"))
    if existing and not overwrite:
        raise FileExistsError(f"{out} already holds {len(existing)} {split} shards ({existing[0].name}, ...): pass "
                              f"--overwrite to replace them or choose another --out")
    texts = _Texts(text_encoder, LATENT_DTYPES[dtype]) if text_encoder is not None else None

    def pick(key: str, scene_id: str) -> str:
        return prompt_for(key, scene_id, prompts, prompt)

    text_empty = _write_text_empty(out, texts) if texts is not None else None
    for path in [*existing, *out.glob(f".{split}-*.tar.tmp")]:
        path.unlink()
    source_entry = read_index(src)["splits"].get(split, {})
    per_shard = samples_per_shard or source_entry.get("samples_per_shard", 64)
    count = sum(len(s.get("keys", [])) for s in source_entry.get("shards", [])) or None
    with ShardWriter(out, split, per_shard) as writer, \
            tqdm(total=count, desc=f"encode {split}", unit="seq", disable=not progress) as bar:
        for shard in shards:
            for key, entries in iter_shard(shard):
                try:
                    new = encode_sample_members(key, entries, codec, dtype=dtype, texts=texts, prompt=pick,
                                                codec_info=codec_info, text_info=text_info, device=device)
                except ValueError as err:
                    raise ShardError(str(shard), key, str(err)) from None
                writer.write_members(key, [(f"{key}.{s}", d) for s, d in entries.items()] + new)
                bar.update()
    num = sum(s["num_samples"] for s in writer.shards)
    summary = dict(source_entry, split=split, encoded_from=str(src), num_sequences=num, latent_dtype=dtype,
                   codec=codec_info, text_encoder=text_info, text_empty=text_empty, samples_per_shard=per_shard,
                   num_shards=len(writer.shards), pattern=f"{split}-{{000000..{len(writer.shards) - 1:06d}}}.tar",
                   shards=writer.shards)
    write_index(out, split, summary)
    return summary


def _write_text_empty(out: Path, texts: _Texts) -> dict[str, Any]:
    """``OUT/text_empty.npy``: the embedding of "" (computed once); refuses to replace a different one."""
    data, tokens = texts("")
    path = out / TEXT_EMPTY
    if path.exists() and path.read_bytes() != data:
        raise FileExistsError(f"{path} holds another empty-prompt embedding (written with another text encoder or "
                              f"dtype): encode into a new --out, or delete it if that folder is being redone")
    write_atomic(path, data)
    return dict(file=TEXT_EMPTY, tokens=tokens, sha256=hashlib.sha256(data).hexdigest())


# -- reading --------------------------------------------------------------------------------------------------------
def decode_latent_sample(entries: Mapping[str, bytes], key: str = "?", *, require_text: bool = True) -> dict[str, Any]:
    """One encoded sample's members (suffix -> bytes) -> tensors, without decoding its frames:

    ``source_latents`` / ``target_latents`` float32 [F, C, h, w], ``text`` float32 [L, D] (None when the sample has
    none and ``require_text`` is False), ``source_c2w`` / ``target_c2w`` [T, 4, 4], ``source_K`` / ``target_K``
    [T, 3, 3], ``revisit`` {n: m}, and ``meta`` (the sample's json) and ``latents_meta`` (its latents.json).
    Anything missing or inconsistent raises a ValueError naming the member and the fix.
    """
    for needed in ("json", "latents.json", "source_latents.npy", "target_latents.npy"):
        if needed not in entries:
            raise ValueError(f"sample {key!r} has no {needed} member (has {sorted(entries)}): it was not encoded; "
                             f"{ENCODE_HINT}")
    try:
        meta, lat = json.loads(entries["json"]), json.loads(entries["latents.json"])
        T, shape, dtype = int(meta["length"]), tuple(lat["latent_shape"]), LATENT_DTYPES[lat["dtype"]]
    except Exception as err:
        raise ValueError(f"sample {key!r}: json or latents.json is broken ({type(err).__name__}: {err})") from None
    if lat.get("format_version") != LATENTS_VERSION or int(lat.get("frames", -1)) != T:
        raise ValueError(f"sample {key!r}: latents.json has format_version {lat.get('format_version')} and frames "
                         f"{lat.get('frames')}, expected {LATENTS_VERSION} and the sample's length {T}")
    out: dict[str, Any] = dict(meta=meta, latents_meta=lat)
    for stream in ("source", "target"):
        suffix = f"{stream}_latents.npy"
        out[f"{stream}_latents"] = torch.from_numpy(_load_npy(entries[suffix], suffix, dtype, shape).astype(np.float32))
    if "text.npy" in entries:
        text = np.load(io.BytesIO(entries["text.npy"]), allow_pickle=False)
        if text.ndim != 2 or text.dtype != dtype or text.shape[0] != lat.get("text_tokens"):
            raise ValueError(f"sample {key!r}: text.npy has dtype {text.dtype} shape {text.shape}: expected {dtype} "
                             f"[{lat.get('text_tokens')}, D] (latents.json text_tokens)")
        out["text"] = torch.from_numpy(text.astype(np.float32))
    elif require_text:
        raise ValueError(f"sample {key!r} has no text.npy: it was encoded without a text encoder, and a text-"
                         f"conditioned model needs one; {ENCODE_HINT}")
    else:
        out["text"] = None
    for suffix, (field, array_dtype, tail) in ARRAY_FIELDS.items():
        out[field] = torch.from_numpy(_load_npy(entries[suffix], suffix, array_dtype, (T, *tail)))
    out["revisit"] = revisit_from_array(_load_npy(entries["revisit.npy"], "revisit.npy", np.int64, (T,)))
    return out


def load_text_empty(directory: str | Path) -> Tensor:
    """The empty-prompt embedding [L, D] (float32) stored beside encoded shards."""
    path = Path(directory) / TEXT_EMPTY
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: the shards in {directory} were encoded without a text "
                                f"encoder; {ENCODE_HINT}")
    return torch.from_numpy(np.load(path, allow_pickle=False).astype(np.float32))


def pad_text(text: Tensor, length: int = 512) -> Tensor:
    """[L, D] -> [length, D], zero rows after the real tokens (as Wan pads umT5 outputs)."""
    if text.shape[0] > length:
        raise ValueError(f"text has {text.shape[0]} tokens, more than length={length}: encode with max_length "
                         f"<= {length}")
    return torch.cat([text, text.new_zeros(length - text.shape[0], *text.shape[1:])])


def batch_text(texts: Sequence[Tensor], length: int | None = None) -> Tensor:
    """[L_i, D] per sample -> [B, length, D] zero-padded (length: the longest, or Wan's 512)."""
    length = length or max(t.shape[0] for t in texts)
    return torch.stack([pad_text(t, length) for t in texts])
