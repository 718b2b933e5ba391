"""Wan's text encoder: umT5 (transformers' ``UMT5EncoderModel``) from a local path, prompts -> per-token embeddings.

Wan conditions on the encoder's last hidden states of the prompt's real tokens (its EOS included), zero-padded
to 512 tokens inside the model; the empty prompt is the encoder's output for "" (one EOS token), not zeros. This
module returns the real tokens only, ``[L, D]`` per prompt, so data can store them compactly and pad on read.
transformers is imported only when an encoder is built.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

TEXT_HINT = ("pass the umT5 encoder as a local folder: a Wan diffusers model folder (with text_encoder/ and "
             "tokenizer/) or one folder holding both the encoder's config.json and weights and its tokenizer files")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "spiece.model")


def find_text_encoder(path: str | Path) -> tuple[Path, Path]:
    """(encoder folder, tokenizer folder) under ``path``; FileNotFoundError naming what is missing."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"text_encoder={str(path)!r} is not a folder; {TEXT_HINT}")
    encoder = path / "text_encoder" if (path / "text_encoder" / "config.json").is_file() else path
    tokenizer = path / "tokenizer" if (path / "tokenizer").is_dir() else encoder
    if not (encoder / "config.json").is_file():
        raise FileNotFoundError(f"text_encoder={str(path)!r} has no config.json (nor text_encoder/config.json); "
                                f"{TEXT_HINT}")
    if not any((tokenizer / name).is_file() for name in TOKENIZER_FILES):
        raise FileNotFoundError(f"text_encoder={str(path)!r}: no tokenizer in {tokenizer} (none of "
                                f"{', '.join(TOKENIZER_FILES)}); {TEXT_HINT}")
    return encoder, tokenizer


class UMT5TextEncoder(nn.Module):
    """Prompts -> ``[L_i, D]`` float32 embeddings of each prompt's real tokens (at most ``max_length``).

    Args:
        path: see :func:`find_text_encoder`.
        dtype: the encoder's weights and compute (``float32``, ``bfloat16``; umT5-XXL is 5.7 B parameters).
        max_length: tokens kept per prompt (Wan: 512); longer prompts are truncated, as Wan does.
    """

    def __init__(self, path: str | Path, dtype: str = "float32", max_length: int = 512):
        super().__init__()
        from transformers import AutoTokenizer, UMT5EncoderModel

        dtypes = {"float32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}
        if dtype not in dtypes:
            raise ValueError(f"text encoder dtype={dtype!r} is unknown: use one of {sorted(dtypes)}")
        if max_length < 1:
            raise ValueError(f"text encoder max_length={max_length}: expected >= 1 (Wan uses 512)")
        encoder, tokenizer = find_text_encoder(path)
        self.tokenizer = AutoTokenizer.from_pretrained(tokenizer, local_files_only=True)
        self.model = UMT5EncoderModel.from_pretrained(encoder, local_files_only=True, dtype=dtypes[dtype])
        self.model.eval().requires_grad_(False)
        self.path, self.max_length = str(path), int(max_length)

    @property
    def dim(self) -> int:
        return int(self.model.config.d_model)

    @torch.no_grad()
    def encode(self, prompts: list[str]) -> list[Tensor]:
        """One ``[L, D]`` float32 tensor per prompt, on the CPU: the hidden states of its real tokens."""
        if isinstance(prompts, str) or not all(isinstance(p, str) for p in prompts):
            raise TypeError(f"prompts must be a list of strings, got {type(prompts).__name__}")
        batch = self.tokenizer(list(prompts), padding=True, truncation=True, max_length=self.max_length,
                               add_special_tokens=True, return_attention_mask=True, return_tensors="pt")
        device = next(self.model.parameters()).device
        mask = batch["attention_mask"].to(device)
        hidden = self.model(input_ids=batch["input_ids"].to(device), attention_mask=mask).last_hidden_state
        return [h[:int(n)].float().cpu() for h, n in zip(hidden, mask.sum(dim=1))]
