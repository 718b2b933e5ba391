"""Random tiny stand-ins for Wan2.1's pretrained parts, built locally and seeded (nothing is downloaded).

One maker per part, shared by the tests (``tests/conftest.py``), ``realcam bench gpu`` on a CPU and
``scripts/make_tiny_wan.py``, which writes them as one diffusers-style model folder::

    OUT/transformer/   WanTransformer3DModel config.json + safetensors at the ``tiny-wan`` preset's sizes
    OUT/vae/           AutoencoderKLWan (base dim 4, 16 latent channels, 8x space, 4x time)
    OUT/text_encoder/  UMT5EncoderModel (d_model = tiny-wan's text_dim, 32)
    OUT/tokenizer/     a word-level tokenizer that appends ``</s>`` like umT5's

The transformer and the VAE have every parameter drawn (norm gains around 1, weights and biases around 0), so
no layer is an identity or a zero at init and a wiring mistake changes the numbers; realcam's own parts of the
transformer (camera encoder, stream embedding), which no Wan checkpoint holds, keep their init. umT5 keeps
transformers' random init. The folder loads through realcam's own loaders:
``realcam.load_pretrained(OUT)`` (or the ``tiny-wan`` preset with ``pretrained: OUT``), ``WanCodec(OUT)``,
``UMT5TextEncoder(OUT)``.
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import torch
from torch import nn

from realcam.modules.backbone import PRESETS, CrossFrameDiT
from realcam.pretrained import REALCAM_ONLY, save_pretrained

TINY_WORDS = "a the camera video scene moves left right up down over city street car dog walks runs on in".split()
TINY_WAN = "tiny-wan"


def _draw_(model: nn.Module, seed: int, std: float, gain_names: tuple[str, ...], skip: tuple[str, ...] = ()) \
        -> nn.Module:
    """Every parameter (except names starting with ``skip``) from a generator seeded with ``seed``: gains (names
    ending in ``gain_names``) in [0.5, 1.5], everything else ``std * N(0, 1)``."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.startswith(skip):
                continue
            p.copy_(0.5 + torch.rand(p.shape, generator=g) if name.endswith(gain_names)
                    else std * torch.randn(p.shape, generator=g))
    return model


def make_tiny_wan_vae(seed: int = 0, **overrides: Any):
    """A random ``AutoencoderKLWan`` (base dim 4, Wan2.1's 8x / 4x compression, 16 channels)."""
    from diffusers import AutoencoderKLWan

    config = dict(base_dim=4, z_dim=16, dim_mult=[1, 2, 2, 2], num_res_blocks=1,
                  temperal_downsample=[False, True, True], **overrides)
    return _draw_(AutoencoderKLWan(**config), seed, 0.3, ("gamma",)).eval()


def make_tiny_wan_transformer(seed: int = 0) -> CrossFrameDiT:
    """realcam's backbone at the ``tiny-wan`` preset with every Wan tensor drawn (realcam's own parts, which a
    pretrained Wan file does not hold, stay at their zero init)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CrossFrameDiT(**PRESETS[TINY_WAN])
    gains = ("norm_q.weight", "norm_k.weight", "norm3.weight")
    return _draw_(model, seed, 0.1, gains, skip=REALCAM_ONLY).eval()


def save_tiny_umt5(root: str | Path, seed: int = 0, d_model: int = 32,
                   tokenizer_root: str | Path | None = None) -> Path:
    """Write a random 2-layer ``UMT5EncoderModel`` to ``root`` and its word-level tokenizer to ``tokenizer_root``
    (default: ``root`` too, one folder holding both), both by save_pretrained."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast, UMT5Config, UMT5EncoderModel

    root = Path(root)
    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2, **{w: i + 3 for i, w in enumerate(TINY_WORDS)}}
    words = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    words.pre_tokenizer = pre_tokenizers.Whitespace()
    words.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    PreTrainedTokenizerFast(tokenizer_object=words, pad_token="<pad>", eos_token="</s>",
                            unk_token="<unk>").save_pretrained(tokenizer_root or root)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        UMT5EncoderModel(UMT5Config(vocab_size=len(vocab), d_model=d_model, d_kv=d_model // 4, d_ff=2 * d_model,
                                    num_layers=2, num_heads=4, relative_attention_num_buckets=8,
                                    relative_attention_max_distance=16, dropout_rate=0.0)).save_pretrained(root)
    return root


def make_tiny_wan(out: str | Path, seed: int = 0) -> Path:
    """Write the whole stand-in (module docstring) to ``out``: built in ``.OUT.partial`` beside it, then renamed,
    so ``out`` is complete or absent. Refuses an existing ``out``."""
    out = Path(out)
    if out.exists():
        raise FileExistsError(f"{out} already exists: make_tiny_wan never overwrites; give a new OUT folder or "
                              f"delete this one first")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        save_pretrained(make_tiny_wan_transformer(seed), tmp / "transformer")
        make_tiny_wan_vae(seed).save_pretrained(tmp / "vae")
        text_dim = PRESETS[TINY_WAN]["text_dim"]
        save_tiny_umt5(tmp / "text_encoder", seed, d_model=text_dim, tokenizer_root=tmp / "tokenizer")
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out
