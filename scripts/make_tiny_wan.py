"""Write a random tiny Wan2.1 model folder that stands in for the pretrained model on a CPU (seeded, atomic).

    python scripts/make_tiny_wan.py OUT [--seed 0]

OUT gets ``transformer/`` (diffusers WanTransformer3DModel at realcam's ``tiny-wan`` sizes), ``vae/``
(AutoencoderKLWan, 16 latent channels), ``text_encoder/`` + ``tokenizer/`` (umT5, d_model 32); the makers live in
:mod:`realcam.tiny_wan`, shared with the tests. OUT must not exist: the folder is built beside it and renamed
when complete. Load it with ``realcam.load_pretrained(OUT)``, ``WanCodec(OUT)`` and ``UMT5TextEncoder(OUT)``, or
in YAML as ``generator: tiny-wan`` with ``generator_args: {pretrained: OUT}`` and ``codec: {class_path: wan,
init_args: {path: OUT}}``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path, help="the model folder to create (must not exist)")
    parser.add_argument("--seed", type=int, default=0, help="seeds every random weight (default 0)")
    args = parser.parse_args(argv)
    from realcam.tiny_wan import make_tiny_wan

    try:
        out = make_tiny_wan(args.out, args.seed)
    except FileExistsError as err:
        print(f"make_tiny_wan: error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {out}: " + ", ".join(sorted(p.name + "/" for p in out.iterdir())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
