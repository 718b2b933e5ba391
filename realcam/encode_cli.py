"""``realcam data encode``: VAE latents and umT5 text embeddings of LoopSequence shards, into new shards.

    realcam data encode data/multicam --out data/multicam_wan --vae /ckpt/Wan2.1-T2V-1.3B \\
        --text-encoder /ckpt/Wan2.1-T2V-1.3B --prompts captions.json --device cuda --dtype float16

It builds the codec (``realcam.modules.wan_vae``) and the text encoder (``realcam.modules.text``) and hands them
to ``realcam.data.encode.encode_shards``; realcam.cli sends ``data encode`` here (data/ imports no model).
The format is docs/data.md, section "Latents and text".
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from realcam.data.encode import LATENT_DTYPES, encode_shards
from realcam.data.shards import ShardError


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="realcam data encode", description="Encode the source and target videos of "
                                "LoopSequence shards with Wan's VAE, and their prompts with umT5, into new shards "
                                "(docs/data.md). The inputs are never modified.")
    p.add_argument("src", help="folder of `realcam data make-shards` output (SPLIT-*.tar and index.json)")
    p.add_argument("--out", required=True, help="new folder for the encoded shards, index.json and text_empty.npy")
    p.add_argument("--split", default="train", help="which shards of SRC: SPLIT-*.tar (default train)")
    p.add_argument("--vae", required=True, help="Wan's VAE: a diffusers model folder (with vae/), its vae/ folder, "
                   "or the original Wan2.1_VAE.pth")
    p.add_argument("--vae-dtype", default="float32", help="the VAE's compute dtype: float32, bf16 or fp16")
    p.add_argument("--text-encoder", help="umT5: a diffusers model folder (text_encoder/ + tokenizer/) or one folder "
                   "with the encoder and its tokenizer; omit for latents only")
    p.add_argument("--text-dtype", default="float32", help="the text encoder's dtype: float32 or bfloat16")
    p.add_argument("--max-text-tokens", type=int, default=512, help="tokens kept per prompt (Wan: 512)")
    p.add_argument("--prompt", help="the prompt of every sample not in --prompts ('' for the empty prompt)")
    p.add_argument("--prompts", help="JSON file: {sample key or scene_id: prompt}")
    p.add_argument("--dtype", choices=sorted(LATENT_DTYPES), default="float32",
                   help="stored latents and text (float16 halves the bytes)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N")
    p.add_argument("--samples-per-shard", type=int, help="default: as in SRC's index.json, else 64")
    p.add_argument("--overwrite", action="store_true", help="replace this split's shards in --out")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def _prompts(path: str | None) -> dict[str, str] | None:
    if path is None:
        return None
    try:
        prompts = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"--prompts {path}: not a readable JSON file ({err})") from None
    if not isinstance(prompts, dict) or not all(isinstance(v, str) for v in prompts.values()):
        raise ValueError(f"--prompts {path}: expected a JSON object {{sample key or scene_id: prompt string}}")
    return prompts


def run(args: argparse.Namespace) -> dict:
    from realcam.device import checked_device
    from realcam.modules.wan_vae import WanCodec

    device = checked_device(args.device, "--device")
    prompts = _prompts(args.prompts)
    if args.text_encoder is None and (args.prompt is not None or prompts):
        raise ValueError("--prompt/--prompts need --text-encoder PATH (umT5) to embed them")
    try:
        codec = WanCodec(args.vae, dtype=args.vae_dtype).to(device)
    except (FileNotFoundError, ValueError) as err:
        raise ValueError(f"--vae: {err}") from None
    codec_info = dict(name="wan", path=str(args.vae), dtype=args.vae_dtype)
    text_encoder = text_info = None
    if args.text_encoder is not None:
        from realcam.modules.text import UMT5TextEncoder

        try:
            text_encoder = UMT5TextEncoder(args.text_encoder, dtype=args.text_dtype,
                                           max_length=args.max_text_tokens).to(device)
        except (FileNotFoundError, ValueError) as err:
            raise ValueError(f"--text-encoder: {err}") from None
        text_info = dict(name="umt5", path=str(args.text_encoder), dtype=args.text_dtype, dim=text_encoder.dim,
                         max_length=args.max_text_tokens)
    return encode_shards(args.src, args.out, codec, split=args.split, text_encoder=text_encoder, prompt=args.prompt,
                         prompts=prompts, dtype=args.dtype, samples_per_shard=args.samples_per_shard,
                         codec_info=codec_info, text_info=text_info, device=device, overwrite=args.overwrite,
                         progress=not args.quiet)


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    try:
        summary = run(args)
        print(f"encoded {summary['num_sequences']} sequences into {summary['num_shards']} shards: "
              f"{Path(args.out) / summary['pattern']} (index: {Path(args.out) / 'index.json'})")
        return 0
    except (ValueError, FileNotFoundError, FileExistsError, ShardError) as err:
        print(f"realcam data encode: error: {err}", file=sys.stderr)
        return 2
