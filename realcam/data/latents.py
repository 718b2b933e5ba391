"""Training from ``realcam data encode`` output: latent batches, never running the VAE or the text encoder.

A latent sample is read with :func:`~realcam.data.encode.decode_latent_sample` (no frame decoding) and kept whole:
no random crop, resize or zoom, because latents cannot be resized and a spatial crop of latents is not the latent
of a crop (the VAE's receptive field crosses the crop border). ``length_buckets`` still apply, as a crop to the
first T' = 1 + 4k' frames: the VAE is causal in time, so the first 1 + k' latent frames of a clip are exactly the
latents of its first T' frames (docs/wan.md), while a window starting later is not (its first frame would need a
latent frame of its own). Evaluation batches also decode the frames, for the metrics against ground truth.

The batch (docs/data.md, "Latent batches"): the camera fields at video frame rate as in
:class:`~realcam.data.datamodule.RealcamBatch`, plus ``source_latents`` / ``target_latents`` float32
[B, F, C, h, w] and, for shards encoded with text, ``text`` float32 [B, L, D] zero-padded to the batch's longest.
"""
from __future__ import annotations

import random
import warnings
from pathlib import Path
from typing import Any

import torch

from realcam.data.stream import ShardStream, crop_sequence
from realcam.data.encode import ENCODE_HINT, batch_text, decode_latent_sample
from realcam.data.loopaug import LoopSequence
from realcam.data.shards import decode_sample, is_remote, read_index

CAMERA_FIELDS = ("source_c2w", "target_c2w", "source_K", "target_K")


def encoded_entry(urls: list[str]) -> dict[str, Any] | None:
    """The index.json split entry that lists the first shard and says it was encoded (``latent_dtype``), or None
    (not encoded, or no index.json to tell: a ``pipe:`` URL)."""
    first = str(urls[0])
    if is_remote(first) and not first.startswith(("http://", "https://")):
        return None
    folder, name = first.rsplit("/", 1) if "/" in first else (".", first)
    for entry in read_index(folder)["splits"].values():
        if "latent_dtype" in entry and any(s.get("name") == name for s in entry.get("shards", [])):
            return entry
    return None


def latent_prefix(frames: int, latent_frames: int, length: int) -> int | None:
    """Latent frames holding exactly the first ``length`` of ``frames`` video frames, or None where no prefix of
    latent frames does (a length off the codec's 1 + 4k rule)."""
    if latent_frames == frames:                         # a frame-wise codec
        return length
    if latent_frames < 2 or (frames - 1) % (latent_frames - 1):
        return None
    factor = (frames - 1) // (latent_frames - 1)        # a causal VAE: a first frame alone, then `factor` per latent
    return 1 + (length - 1) // factor if (length - 1) % factor == 0 else None


class LatentShardStream(ShardStream):
    """Batches of precomputed latents (and text) from encoded shards; ``frames=True`` (evaluation) adds the uint8
    ``source`` / ``target`` frames [B, T, 3, H, W] of the same samples. ``text_length``: pad every batch's text to
    this many tokens (None: to the batch's longest)."""

    def __init__(self, urls: list[str], *, frames: bool = False, text_length: int | None = None, **kwargs: Any):
        if kwargs.get("max_zoom", 1.0) != 1.0:
            raise ValueError("max_zoom cannot apply to latent shards (latents were encoded at the stored "
                             "resolution): leave it at 1.0")
        super().__init__(urls, **kwargs)
        self.frames, self.text_length = frames, text_length

    def decode(self, entries: dict[str, bytes], key: str) -> dict[str, Any]:    # type: ignore[override]
        sample = decode_latent_sample(entries, key, require_text=False)
        if self.frames:
            sample["seq"] = decode_sample(entries, key)
        return sample

    def _prepare(self, key: str, sample: dict[str, Any], rng: random.Random) -> dict[str, Any] | None:
        T, F = int(sample["meta"]["length"]), int(sample["source_latents"].shape[0])
        if self.length_buckets is not None:
            fits = [(b, n) for b in self.length_buckets if b <= T and (n := latent_prefix(T, F, b)) is not None]
            if not fits:
                warnings.warn(f"sample {key!r} has {T} frames ({F} latent frames): no length bucket of "
                              f"{self.length_buckets} is a prefix its latents hold (the codec's 1 + 4k rule); "
                              f"skipped", RuntimeWarning, stacklevel=2)
                return None
            T, F = fits[-1]
        revisit = torch.full((T,), -1, dtype=torch.long)
        for n, m in sample["revisit"].items():
            if n < T:
                revisit[n] = m
        out = dict(source_latents=sample["source_latents"][:F], target_latents=sample["target_latents"][:F],
                   text=sample["text"], revisit=revisit, key=key, scene_id=sample["meta"].get("scene_id", ""),
                   strategy=sample["meta"].get("strategy", "none"),
                   **{k: sample[k][:T].float() for k in CAMERA_FIELDS})
        if self.frames:
            seq: LoopSequence = crop_sequence(sample["seq"], 0, T)
            out.update(source=seq.source_frames.permute(0, 3, 1, 2).contiguous(),
                       target=seq.target_frames.permute(0, 3, 1, 2).contiguous())
        return out

    @staticmethod
    def shape_key(sample: dict[str, Any]) -> tuple:
        text = sample["text"]
        return (tuple(sample["source_latents"].shape), int(sample["revisit"].shape[0]),
                None if text is None else int(text.shape[-1]))

    def collate(self, samples: list[dict[str, Any]]) -> dict[str, Any]:    # type: ignore[override]
        stacked = ["source_latents", "target_latents", *CAMERA_FIELDS, "revisit"]
        stacked += [k for k in ("source", "target") if k in samples[0]]
        batch: dict[str, Any] = {k: torch.stack([s[k] for s in samples]) for k in stacked}
        if samples[0]["text"] is not None:      # shape_key keeps samples with and without text apart
            batch["text"] = batch_text([s["text"] for s in samples], self.text_length)
        batch["length"] = int(batch["revisit"].shape[1])
        batch.update({k: [s[k] for s in samples] for k in ("key", "scene_id", "strategy")})
        return batch


def check_encoded_size(urls: list[str], image_size: tuple[int, int] | None, argument: str) -> None:
    """``image_size`` on latent shards is a check, not a resize: it must be the one size index.json says the
    frames were encoded at (shards without an index, e.g. remote ones, are not checked)."""
    entry = encoded_entry(urls)
    if image_size is None or entry is None or not entry.get("resolutions"):
        return
    want = f"{image_size[0]}x{image_size[1]}"
    if set(entry["resolutions"]) != {want}:
        stored = sorted(entry["resolutions"])
        raise ValueError(f"{argument} were encoded at {', '.join(stored)} but image_size={list(image_size)}: latents "
                         f"are used at the size they were encoded at; set image_size: "
                         f"[{stored[0].replace('x', ', ')}] (or leave it unset), or encode frames of that size")


def check_latent_shards(urls: list[str], argument: str) -> None:
    """For ``latents=True``: a clear error where index.json beside local shards says they hold no latents."""
    first = str(urls[0])
    if is_remote(first) or encoded_entry(urls) is not None:
        return
    folder = Path(first).parent
    if (folder / "index.json").is_file():
        raise ValueError(f"{argument}: {folder} holds shards without latents (its index.json has no latent_dtype) "
                         f"but latents=True: {ENCODE_HINT}, and point {argument} at the encoded folder")
