"""Wan2.1 weights from a local path into realcam's backbone, and back out (docs/wan.md).

:func:`load_pretrained` reads a diffusers folder (``transformer/config.json`` and sharded safetensors), a single
diffusers-layout ``.safetensors``, or an original Wan ``.safetensors`` / ``.pth`` (with or without the
``model.diffusion_model.`` prefix), builds :class:`~realcam.modules.backbone.CrossFrameDiT` on the ``meta``
device and loads every tensor straight into it (read from the file into its final tensor: the weights are never
held twice). realcam's own parts (camera encoder, stream embedding, reprojection) start at zero, so the loaded
model's output on the joint sequence is Wan's. :func:`save_pretrained` writes the diffusers (or original) layout
back. Nothing is downloaded.
"""
from __future__ import annotations

import json
import logging
import shutil
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor, nn

from realcam.modules.backbone import PRESETS, CrossFrameDiT, build_camera_encoder
from realcam.modules.attention import AttentionBackend
from realcam.modules.camera import CameraEncoder, ReCamMasterEncoder
from realcam.modules.rope import Rope3D
from realcam.registry import BACKBONES

log = logging.getLogger(__name__)

ORIGINAL_PREFIX = "model.diffusion_model."
WAN_HEAD_DIM = 128          # every Wan2.1 model; the head count of a checkpoint without config is dim // 128
REALCAM_ONLY = ("stream_embed", "camera_encoder.", "reproject.", "blend_head.")
SAFETENSORS_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
                      "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
                      "U8": torch.uint8, "BOOL": torch.bool}
# realcam name -> (diffusers name, original Wan name); "{i}" is the block index
GLOBAL_KEYS = {
    "patch_embed.weight": ("patch_embedding.weight", "patch_embedding.weight"),
    "patch_embed.bias": ("patch_embedding.bias", "patch_embedding.bias"),
    "text_embed.0.weight": ("condition_embedder.text_embedder.linear_1.weight", "text_embedding.0.weight"),
    "text_embed.0.bias": ("condition_embedder.text_embedder.linear_1.bias", "text_embedding.0.bias"),
    "text_embed.2.weight": ("condition_embedder.text_embedder.linear_2.weight", "text_embedding.2.weight"),
    "text_embed.2.bias": ("condition_embedder.text_embedder.linear_2.bias", "text_embedding.2.bias"),
    "time_embed.0.weight": ("condition_embedder.time_embedder.linear_1.weight", "time_embedding.0.weight"),
    "time_embed.0.bias": ("condition_embedder.time_embedder.linear_1.bias", "time_embedding.0.bias"),
    "time_embed.2.weight": ("condition_embedder.time_embedder.linear_2.weight", "time_embedding.2.weight"),
    "time_embed.2.bias": ("condition_embedder.time_embedder.linear_2.bias", "time_embedding.2.bias"),
    "time_proj.1.weight": ("condition_embedder.time_proj.weight", "time_projection.1.weight"),
    "time_proj.1.bias": ("condition_embedder.time_proj.bias", "time_projection.1.bias"),
    "head_modulation": ("scale_shift_table", "head.modulation"),
    "head.weight": ("proj_out.weight", "head.head.weight"),
    "head.bias": ("proj_out.bias", "head.head.bias"),
}
BLOCK_KEYS = {"modulation": ("scale_shift_table", "modulation"),
              "norm3.weight": ("norm2.weight", "norm3.weight"), "norm3.bias": ("norm2.bias", "norm3.bias"),
              "ffn.0.weight": ("ffn.net.0.proj.weight", "ffn.0.weight"),
              "ffn.0.bias": ("ffn.net.0.proj.bias", "ffn.0.bias"),
              "ffn.2.weight": ("ffn.net.2.weight", "ffn.2.weight"), "ffn.2.bias": ("ffn.net.2.bias", "ffn.2.bias")}
for _ours, (_diff, _orig) in (("", ("attn1", "self_attn")), ("cross_attn.", ("attn2", "cross_attn"))):
    for _p in ("q", "k", "v", "o"):
        for _t in ("weight", "bias"):
            BLOCK_KEYS[f"{_ours}{_p}.{_t}"] = (f"{_diff}.to_{'out.0' if _p == 'o' else _p}.{_t}", f"{_orig}.{_p}.{_t}")
    for _n in ("norm_q", "norm_k"):
        BLOCK_KEYS[f"{_ours}{_n}.weight"] = (f"{_diff}.{_n}.weight", f"{_orig}.{_n}.weight")

Layout = Literal["diffusers", "original"]


def recammaster_key_table(depth: int) -> dict[str, str]:
    """realcam key -> ReCamMaster's checkpoint key of its camera injection (the same in both layouts)."""
    return {f"camera_encoder.{part}.{i}.{t}": f"blocks.{i}.{part}.{t}" for i in range(depth)
            for part in ("cam_encoder", "projector") for t in ("weight", "bias")}


def _camera_table(model: CrossFrameDiT, entries: dict, path) -> dict[str, str]:
    """The ReCamMaster keys to load: all of them with the ``recammaster`` encoder and a ReCamMaster checkpoint, none
    for a plain Wan file (the encoder keeps its init: zero embedding, identity projector); half a set is an error."""
    if not isinstance(model.camera_encoder, ReCamMasterEncoder):
        return {}
    table = recammaster_key_table(model.depth)
    present = [k for k in table.values() if k in entries]
    if present and len(present) != len(table):
        missing = [k for k in table.values() if k not in entries]
        raise ValueError(f"{path} has ReCamMaster camera tensors for some blocks but lacks {missing[:4]} "
                         f"({len(missing)} in all): the checkpoint is incomplete")
    return table if present else {}


def key_table(depth: int, layout: Layout) -> dict[str, str]:
    """realcam state-dict key -> the checkpoint key in ``layout``, for every Wan tensor of a ``depth``-block model."""
    col = 0 if layout == "diffusers" else 1
    table = {ours: names[col] for ours, names in GLOBAL_KEYS.items()}
    for i in range(depth):
        table.update({f"blocks.{i}.{ours}": f"blocks.{i}.{names[col]}" for ours, names in BLOCK_KEYS.items()})
    return table


# ---- tensor conversions between the layouts and realcam ----------------------------------------------
def _head_rows(model: CrossFrameDiT) -> Tensor:
    """For each row of realcam's head, ordered (C, pt, ph, pw), the row of Wan's, ordered (pt, ph, pw, C)."""
    pt, ph, pw = model.patch
    rows = torch.arange(model.in_channels * pt * ph * pw).view(pt, ph, pw, model.in_channels)
    return rows.permute(3, 0, 1, 2).flatten()


def to_realcam(key: str, value: Tensor, model: CrossFrameDiT) -> Tensor:
    """A Wan tensor (either layout) as realcam's ``key`` holds it."""
    if key == "patch_embed.weight":
        return value.flatten(1)                                  # Conv3d [D, C, pt, ph, pw] -> Linear [D, C*pt*ph*pw]
    if key.endswith("modulation"):
        return value.unsqueeze(1)                                # [1, k, D] -> [1, 1, k, D]
    if key in ("head.weight", "head.bias"):
        return value[_head_rows(model)]
    return value


def from_realcam(key: str, value: Tensor, model: CrossFrameDiT) -> Tensor:
    """realcam's ``key`` as Wan stores it (the inverse of :func:`to_realcam`)."""
    if key == "patch_embed.weight":
        return value.view(value.shape[0], model.in_channels, *model.patch)
    if key.endswith("modulation"):
        return value.squeeze(1)
    if key in ("head.weight", "head.bias"):
        return value[torch.argsort(_head_rows(model))]
    return value


# ---- reading checkpoints --------------------------------------------------------------------------------
@dataclass
class _Entry:
    file: Path
    dtype: torch.dtype
    shape: tuple[int, ...]
    start: int | None = None      # byte offsets in a safetensors file
    end: int | None = None
    tensor: Tensor | None = None  # a .pth tensor (memory-mapped)

    def read(self, dtype: torch.dtype | None) -> Tensor:
        if self.tensor is not None:
            out = self.tensor
        else:       # straight from the file into the tensor's own memory: no mmap, no second copy
            out = torch.empty(self.shape, dtype=self.dtype)
            with open(self.file, "rb") as f:
                f.seek(self.start)
                buffer = memoryview(out.view(-1).view(torch.uint8).numpy())
                if out.numel() and f.readinto(buffer) != self.end - self.start:
                    raise ValueError(f"{self.file} is truncated (a tensor's bytes end early): copy or download it "
                                     f"again")
        return out if dtype is None or out.dtype == dtype or not out.is_floating_point() else out.to(dtype)


def _safetensors_entries(path: Path) -> dict[str, _Entry]:
    size = path.stat().st_size
    with open(path, "rb") as f:
        raw = f.read(8)
        n = struct.unpack("<Q", raw)[0] if len(raw) == 8 else -1
        if n < 0 or 8 + n > size:
            raise ValueError(f"{path} is not a readable safetensors file (truncated or not safetensors: {size} bytes, "
                             f"header of {n} bytes): copy or download it again")
        try:
            header = json.loads(f.read(n))
        except ValueError as err:
            raise ValueError(f"{path} has a broken safetensors header ({err}): copy or download it again") from None
    entries, base = {}, 8 + n
    for key, info in header.items():
        if key == "__metadata__":
            continue
        start, end = info["data_offsets"]
        if base + end > size:
            raise ValueError(f"{path} is truncated: tensor {key!r} ends at byte {base + end} but the file has {size} "
                             f"bytes; copy or download it again")
        if info["dtype"] not in SAFETENSORS_DTYPES:
            raise ValueError(f"{path}: tensor {key!r} has dtype {info['dtype']}, which realcam does not read")
        entries[key] = _Entry(path, SAFETENSORS_DTYPES[info["dtype"]], tuple(info["shape"]), base + start, base + end)
    return entries


def _weight_files(path: Path) -> tuple[list[Path], Path | None]:
    """(weight files, config.json or None) of a checkpoint path; a clear error if it is none."""
    if path.is_file():
        if path.suffix not in (".safetensors", ".pth", ".pt", ".bin"):
            raise ValueError(f"{path} is not a Wan checkpoint file: expected .safetensors or .pth")
        config = path.with_name("config.json")
        return [path], config if config.is_file() else None
    if not path.is_dir():
        raise FileNotFoundError(f"{path} does not exist: give a diffusers folder, a .safetensors or a .pth file")
    folder = path / "transformer" if (path / "transformer" / "config.json").is_file() else path
    index = sorted(folder.glob("*.safetensors.index.json"))
    if index:
        shards = sorted(set(json.loads(index[0].read_text())["weight_map"].values()))
        files = [folder / s for s in shards]
        missing = [str(f) for f in files if not f.is_file()]
        if missing:
            raise FileNotFoundError(f"{index[0]} lists shards that are missing: {missing[:3]}; copy the whole folder")
    else:
        files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise ValueError(f"{path} is not a Wan checkpoint: expected a diffusers folder (transformer/config.json and "
                         f"diffusion_pytorch_model*.safetensors) or a .safetensors / .pth file")
    config = folder / "config.json"
    return files, config if config.is_file() else None


def read_checkpoint(path: str | Path) -> tuple[dict[str, _Entry], dict | None, Layout]:
    """Every tensor of a Wan checkpoint by name (prefix stripped, not yet read), its config and its layout."""
    files, config_path = _weight_files(Path(path))
    entries: dict[str, _Entry] = {}
    for file in files:
        if file.suffix == ".safetensors":
            entries.update(_safetensors_entries(file))
        else:
            try:
                state = torch.load(file, map_location="cpu", weights_only=True, mmap=True)
            except Exception as err:
                raise ValueError(f"{file} cannot be read as a weights-only checkpoint ({type(err).__name__}: "
                                 f"{str(err).splitlines()[0] if str(err) else ''}); copy it again") from None
            state = state.get("state_dict", state) if isinstance(state, dict) else {}
            entries.update({k: _Entry(file, v.dtype, tuple(v.shape), tensor=v) for k, v in state.items()
                            if isinstance(v, Tensor)})
    entries = {k[len(ORIGINAL_PREFIX):] if k.startswith(ORIGINAL_PREFIX) else k: v for k, v in entries.items()}
    if "condition_embedder.time_proj.weight" in entries:
        layout: Layout = "diffusers"
    elif "time_projection.1.weight" in entries:
        layout = "original"
    else:
        raise ValueError(f"{path} holds no Wan transformer weights (no time projection among keys such as "
                         f"{sorted(entries)[:4]}): point it at Wan2.1's transformer (a diffusers folder or an "
                         f"original file)")
    config = json.loads(config_path.read_text()) if config_path is not None else None
    return entries, config, layout


def architecture(entries: dict[str, _Entry], config: dict | None, layout: Layout) -> dict:
    """CrossFrameDiT's size arguments of a checkpoint: from its config.json (diffusers or original keys), else
    from the tensor shapes (heads = dim // 128, as in every Wan2.1 model)."""
    names = key_table(1, layout)
    patch_w = entries[names["patch_embed.weight"]].shape
    depth = 1 + max(int(k.split(".")[1]) for k in entries if k.startswith("blocks."))
    arch = dict(in_channels=patch_w[1], dim=patch_w[0], patch=tuple(patch_w[2:]), depth=depth,
                ffn_dim=entries[names["blocks.0.ffn.0.weight"]].shape[0],
                freq_dim=entries[names["time_embed.0.weight"]].shape[1],
                text_dim=entries[names["text_embed.0.weight"]].shape[1], heads=patch_w[0] // WAN_HEAD_DIM)
    if config:
        if config.get("image_dim") or config.get("model_type") in ("i2v", "flf2v"):
            raise ValueError("this checkpoint is an image-to-video Wan model; realcam loads the text-to-video "
                             "transformer (Wan2.1-T2V-1.3B / 14B)")
        heads = config.get("num_attention_heads", config.get("num_heads"))
        arch["heads"] = int(heads) if heads else arch["heads"]
        arch["eps"] = float(config.get("eps", 1e-6))
        if int(config.get("out_channels", config.get("out_dim", arch["in_channels"]))) != arch["in_channels"]:
            raise ValueError("this Wan checkpoint has out_channels != in_channels; realcam predicts the latents it "
                             "reads")
    return arch


# ---- the public calls -------------------------------------------------------------------------------------
def load_pretrained(path: str | Path, dtype: torch.dtype | str | None = None, **overrides) -> CrossFrameDiT:
    """Wan2.1's transformer from ``path`` as a realcam backbone (``model(x, sigma, cond, cache=None) -> flow``).

    ``dtype``: cast the weights (e.g. ``torch.bfloat16``); None keeps the file's. ``overrides``: realcam's own
    options (``layout``, ``attention_mode``, ``chunk_frames``, ``sink_chunks``, ``window_chunks``,
    ``camera_encoder``, ``attention``, ...); the architecture comes from the checkpoint. The loaded model carries
    ``pretrained_report = {"missing": [...], "unexpected": [...], "layout": ...}``; a missing Wan tensor or a
    shape mismatch is an error naming the key.
    """
    entries, config, layout = read_checkpoint(path)
    kwargs = _model_kwargs(path, entries, config, layout, overrides)
    with torch.device("meta"):
        model = CrossFrameDiT(**kwargs)
    return _load_into(model, path, entries, layout, kwargs, dtype)


def _model_kwargs(path, entries: dict, config: dict | None, layout: Layout, overrides: dict) -> dict:
    """CrossFrameDiT's arguments: the checkpoint's architecture plus realcam's options (an architecture override
    that differs from the checkpoint is an error)."""
    arch = architecture(entries, config, layout)
    clash = {k: (overrides[k], v) for k, v in arch.items() if k in overrides and overrides[k] != v}
    if clash:
        named = ", ".join(f"{k}={a!r} (the checkpoint has {b!r})" for k, (a, b) in clash.items())
        raise ValueError(f"{path}: {named}: the architecture comes from the checkpoint; drop these overrides")
    return {"chunk_frames": 3, "fp32_modulation": True, **overrides, **arch}


def _load_into(model: CrossFrameDiT, path, entries: dict, layout: Layout, kwargs: dict,
               dtype: torch.dtype | str | None) -> CrossFrameDiT:
    """Fill ``model``, built on ``meta`` from ``kwargs``, with the checkpoint's tensors (each read straight into its
    final tensor) and realcam's own parts at their init; sets ``pretrained_report``."""
    dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
    _materialize_realcam_parts(model, kwargs, dtype)
    table = key_table(model.depth, layout)
    missing = [table[k] for k in table if table[k] not in entries]
    camera_keys = _camera_table(model, entries, path)
    table.update(camera_keys)
    if missing:
        raise ValueError(f"{path} is missing Wan tensors {missing[:6]}{' ...' if len(missing) > 6 else ''} "
                         f"({len(missing)} in all): the checkpoint is incomplete or not Wan2.1 T2V")
    unexpected = sorted(set(entries) - set(table.values()))
    state = {}
    for ours, theirs in table.items():
        want = tuple(model.get_parameter(ours).shape)
        got = tuple(to_realcam(ours, torch.empty(entries[theirs].shape, device="meta"), model).shape)
        if got != want:
            raise ValueError(f"{path}: tensor {theirs!r} has shape {tuple(entries[theirs].shape)} but realcam's "
                             f"{ours!r} needs {want} (as {got} after conversion): the checkpoint does not match "
                             f"the architecture {({k: kwargs[k] for k in ARCHITECTURE_KEYS if k in kwargs})}")
        state[ours] = to_realcam(ours, entries.pop(theirs).read(dtype), model).contiguous()
    model.load_state_dict(state, strict=False, assign=True)
    if unexpected:
        log.warning("%s: %d tensors are not part of Wan2.1 T2V and were skipped: %s", path, len(unexpected),
                    unexpected[:8])
    model.pretrained_report = {"layout": layout, "missing": [], "unexpected": unexpected,
                               "camera": "recammaster" if camera_keys else "init"}
    return model


def _materialize_realcam_parts(model: CrossFrameDiT, kwargs: dict, dtype: torch.dtype | None) -> None:
    """Build realcam's own parts (and the RoPE tables) for real on the CPU, every output starting at zero."""
    if model.reproject is not None:
        raise ValueError("load_pretrained does not take the source reprojection: leave reproject_depths unset")
    model.rope = Rope3D(model.dim // model.heads, kwargs.get("rope_theta", 10000.0))
    model.stream_embed = nn.Parameter(torch.zeros(2, model.dim, dtype=dtype))
    encoder = kwargs.get("camera_encoder", "plucker")
    if isinstance(encoder, str):
        encoder = build_camera_encoder(encoder, model.dim, model.depth, kwargs.get("camera_encoder_args"))
    model.camera_encoder = encoder.to(dtype) if dtype is not None else encoder


def save_pretrained(model: CrossFrameDiT, out: str | Path, layout: Layout = "diffusers",
                    overwrite: bool = False) -> Path:
    """Write ``model``'s Wan tensors as a diffusers folder (``config.json`` + ``diffusion_pytorch_model.safetensors``,
    loadable by ``WanTransformer3DModel.from_pretrained``) or, with ``layout='original'``, one original-layout
    ``.safetensors`` file. realcam's own parts are not written. Atomic: a temporary name, then renamed."""
    from safetensors.torch import save_file

    if model.text_dim is None:
        raise ValueError("save_pretrained writes Wan checkpoints: the model needs text_dim (a Wan backbone)")
    out = Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} already exists: pass overwrite=True or another path")
    own = model.state_dict()
    state = {theirs: from_realcam(ours, own[ours], model).detach().cpu().contiguous()
             for ours, theirs in key_table(model.depth, layout).items()}
    tmp = out.with_name(f".{out.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    if layout == "original":
        save_file(state, str(tmp), metadata={"format": "pt"})
    else:
        tmp.mkdir(parents=True)
        save_file(state, str(tmp / "diffusion_pytorch_model.safetensors"), metadata={"format": "pt"})
        (tmp / "config.json").write_text(json.dumps(diffusers_config(model), indent=2))
    if out.exists():
        shutil.rmtree(out) if out.is_dir() else out.unlink()
    tmp.rename(out)
    return out


def diffusers_config(model: CrossFrameDiT) -> dict:
    """``WanTransformer3DModel``'s config for ``model``'s Wan part."""
    return {"_class_name": "WanTransformer3DModel", "patch_size": list(model.patch),
            "num_attention_heads": model.heads, "attention_head_dim": model.dim // model.heads,
            "in_channels": model.in_channels, "out_channels": model.in_channels, "text_dim": model.text_dim,
            "freq_dim": model.freq_dim, "ffn_dim": model.blocks[0].ffn[0].out_features, "num_layers": model.depth,
            "cross_attn_norm": True, "qk_norm": "rms_norm_across_heads", "eps": model.blocks[0].eps,
            "image_dim": None, "added_kv_proj_dim": None, "rope_max_seq_len": 1024}


class PretrainedWan(CrossFrameDiT):
    """Wan2.1's transformer from a local checkpoint as a class, for YAML ``class_path`` (e.g. the teacher's
    ``denoiser``): ``init_args: {pretrained: PATH, attention_mode: bidirectional}``. The same as
    :func:`load_pretrained` (built on ``meta``, every tensor read straight into place: never two copies); the
    architecture comes from the checkpoint, the arguments are realcam's own options (CrossFrameDiT's)."""

    def __init__(self, pretrained: str, dtype: str | None = None, layout: Literal["interleaved", "prefix"] =
                 "interleaved", attention_mode: Literal["bidirectional", "causal"] = "bidirectional",
                 chunk_frames: int = 3, sink_chunks: int = 1, window_chunks: int | None = None,
                 rope_policy: Literal["window", "absolute"] = "window", camera_encoder: str | CameraEncoder =
                 "plucker", camera_encoder_args: dict | None = None, attention: str | AttentionBackend =
                 "sdpa", prediction: Literal["flow", "x0"] = "flow"):
        options = dict(layout=layout, attention_mode=attention_mode, chunk_frames=chunk_frames,
                       sink_chunks=sink_chunks, window_chunks=window_chunks, rope_policy=rope_policy,
                       camera_encoder=camera_encoder, camera_encoder_args=camera_encoder_args, attention=attention,
                       prediction=prediction)
        entries, config, layout_ = read_checkpoint(pretrained)
        kwargs = _model_kwargs(pretrained, entries, config, layout_, options)
        with torch.device("meta"):
            super().__init__(**kwargs)
        _load_into(self, pretrained, entries, layout_, kwargs, dtype)


def standalone_spec(init_args: dict) -> dict:
    """The ``CrossFrameDiT`` class_path/init_args that build the architecture ``PretrainedWan(**init_args)`` builds,
    without the checkpoint: a bundle holds its own weights, so streaming it needs neither the pretrained folder
    nor a second load of its weights. Only the checkpoint's header and config are read."""
    options = {k: v for k, v in init_args.items() if k not in ("pretrained", "dtype")}
    entries, config, layout = read_checkpoint(init_args["pretrained"])
    kwargs = _model_kwargs(init_args["pretrained"], entries, config, layout, options)
    return {"class_path": f"{CrossFrameDiT.__module__}.{CrossFrameDiT.__name__}",
            "init_args": {k: list(v) if isinstance(v, tuple) else v for k, v in kwargs.items()}}


# ---- the Wan presets take ``pretrained`` (registry name + args, e.g. YAML ``generator_args: {pretrained: PATH}``) ----
WAN_PRESETS = ("wan2.1-t2v-1.3b", "wan2.1-t2v-14b", "tiny-wan")
ARCHITECTURE_KEYS = ("in_channels", "dim", "depth", "heads", "ffn_dim", "patch", "freq_dim", "text_dim", "eps")


def _wan_factory(name: str):
    def build(pretrained: str | None = None, **overrides) -> CrossFrameDiT:
        options = {**PRESETS[name], **overrides}
        if pretrained is None:
            return CrossFrameDiT(**options)
        return load_pretrained(pretrained, **{k: v for k, v in options.items() if k not in ARCHITECTURE_KEYS})

    build.__name__ = name.replace("-", "_").replace(".", "_")
    build.__doc__ = (f"CrossFrameDiT with the {name!r} preset ({PRESETS[name]}); keyword overrides win; "
                     f"``pretrained``: a local Wan checkpoint (:func:`load_pretrained`, the architecture from it).")
    return build


for _name in WAN_PRESETS:
    BACKBONES.register(_name, override=True)(_wan_factory(_name))
