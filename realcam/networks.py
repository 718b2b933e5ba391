"""Networks chosen by config: a registry name, an instance (``class_path`` in YAML), plus optional weights.

The student systems take three networks (generator, real score, critic). Each is given as

* an ``nn.Module`` instance (YAML ``class_path`` / ``init_args``; any module following the denoiser protocol),
* or a :data:`~realcam.registry.BACKBONES` name such as ``tiny`` (with ``*_args`` overrides, e.g.
  ``{"attention_mode": "causal"}``),

and optionally initialized from a checkpoint: a Lightning ``.ckpt`` written by ``realcam fit`` (the EMA weights
by default, else the raw ones) or a ``.safetensors`` file of the bare network. Checkpoints are read with
``torch.load(weights_only=True)``: no pickled code runs.
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
from torch import nn

from realcam.registry import BACKBONES

# Where a network's weights live inside the Lightning checkpoints of realcam's systems, most preferred first.
EMA_PREFIXES = ("ema.module.", "ema.shadow.")   # timm ModelEmaV3; before it, realcam's own EMA
RAW_PREFIXES = ("generator.", "denoiser.")


def build_network(spec: nn.Module | str, overrides: dict | None = None, field: str = "network") -> nn.Module:
    """An instance as is, or ``BACKBONES.build(name, **overrides)``; ``field`` names the config key in errors."""
    if isinstance(spec, nn.Module):
        if overrides:
            raise ValueError(f"{field}_args={overrides} only applies when {field} is a registry name; put these "
                             f"values in {field}.init_args instead")
        return spec
    if isinstance(spec, str):
        if spec not in BACKBONES:
            raise ValueError(f"{field}={spec!r} is not a registered backbone ({', '.join(BACKBONES.list())}); give "
                             f"a registry name or a class_path with init_args")
        return BACKBONES.build(spec, **(overrides or {}))
    raise TypeError(f"{field} must be an nn.Module (class_path) or a backbone registry name, got {type(spec).__name__}")


def read_state_dict(path: str | Path, prefer: Literal["ema", "raw"] = "ema", field: str = "weights") -> dict:
    """The bare network's state dict from a Lightning checkpoint or a safetensors file.

    Lightning checkpoints: the ``ema.module.*`` entries (``ema.shadow.*`` in older checkpoints) when
    ``prefer='ema'`` and present, else the first of ``generator.*`` / ``denoiser.*`` found, prefix stripped.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{field}={str(path)!r} does not exist: point it at a .ckpt from `realcam fit` or a "
                                f".safetensors file")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:    # truncated or corrupt files, pickles that weights_only refuses
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"{field}={str(path)!r} cannot be read ({type(err).__name__}: {reason}); the file is "
                         f"truncated, corrupt or not a realcam checkpoint: copy it again, re-export it (`realcam export` "
                         f"for a bundle) or use another file") from err
    state = ckpt.get("state_dict", ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict):
        raise ValueError(f"{field}={str(path)!r} holds no state dict")
    prefixes = (EMA_PREFIXES + RAW_PREFIXES) if prefer == "ema" else RAW_PREFIXES
    for prefix in prefixes:
        sub = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        if sub:
            return sub
    raise ValueError(f"{field}={str(path)!r} has none of the network prefixes {prefixes} (keys start "
                     f"{sorted({k.split('.')[0] for k in state})}): expected a realcam system checkpoint")


def load_network_weights(net: nn.Module, path: str | Path, prefer: Literal["ema", "raw"] = "ema",
                         field: str = "weights") -> nn.Module:
    """Load weights into ``net`` (strict: a mismatch names the missing / unexpected keys and the config field)."""
    state = read_state_dict(path, prefer, field)
    try:
        missing, unexpected = net.load_state_dict(state, strict=False)
    except RuntimeError as err:      # shape mismatches raise even when strict=False
        raise ValueError(f"{field}={str(path)!r} does not fit the configured network ({str(err).splitlines()[-1].strip()}"
                         f"); the architecture in the config must match the checkpoint's") from err
    if missing or unexpected:
        raise ValueError(f"{field}={str(path)!r} does not fit the configured network: missing {missing[:6]}, "
                         f"unexpected {unexpected[:6]}; the architecture in the config must match the checkpoint's")
    return net
