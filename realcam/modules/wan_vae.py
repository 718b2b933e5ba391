"""The ``wan`` codec: Wan2.1's causal video VAE (diffusers' ``AutoencoderKLWan``) as a streaming latent codec.

Wan's VAE codes the first frame into a latent frame of its own, then 4 frames per latent frame (8x in space,
16 channels), so a clip has 1 + 4k frames. It is causal in time: each convolution keeps its last input frames in
a feature cache, which is why chunked coding equals whole-clip coding exactly when the cache is kept across
calls (:class:`WanStream`). Latents are normalised per channel with Wan's mean and std: ``(mu - mean) / std``.

Weights come from a local path, never the network: a diffusers ``vae/`` folder (or the model folder above it),
or one file in the original Wan layout (``Wan2.1_VAE.pth``; a ``.safetensors`` in that layout too), whose keys
are renamed on load (:func:`original_to_diffusers`). diffusers is imported only when a Wan codec is built.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from realcam.modules.codecs import CodecStream, LatentCodec
from realcam.registry import CODECS

DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
          "float16": torch.float16, "fp16": torch.float16, "float64": torch.float64}
# Keys that say which layout a single checkpoint file is in.
ORIGINAL_PROBE = "decoder.middle.0.residual.0.gamma"
DIFFUSERS_PROBE = "decoder.mid_block.resnets.0.norm1.gamma"
WAN_FILE_HINT = ("pass the Wan VAE as a diffusers folder (the model's vae/ with config.json and the weights) or "
                 "the original Wan2.1_VAE.pth")


# -- key layouts ----------------------------------------------------------------------------------------------------
# Inside a residual block diffusers names the layers, the original indexes its Sequential
# (RMS_norm, SiLU, CausalConv3d, RMS_norm, SiLU, Dropout, CausalConv3d).
_RESNET_PARTS = {"norm1.gamma": "residual.0.gamma", "conv1": "residual.2", "norm2.gamma": "residual.3.gamma",
                 "conv2": "residual.6", "conv_shortcut": "shortcut"}


def _resnet_to_original(rest: str) -> str:
    for name, original in _RESNET_PARTS.items():
        if rest == name or rest.startswith(name + "."):
            return original + rest[len(name):]
    return rest        # resample.1.*, time_conv.* and attention norm/to_qkv/proj keep their names


def diffusers_to_original(key: str, num_res_blocks: int) -> str:
    """One diffusers ``AutoencoderKLWan`` key -> its name in the original Wan VAE checkpoint.

    The original decoder is one flat ``upsamples`` list: per stage ``num_res_blocks + 1`` residual blocks, then
    the stage's resample (diffusers: ``up_blocks.S.resnets.R`` and ``up_blocks.S.upsamplers.0``). The encoder's
    ``downsamples`` list is diffusers' ``down_blocks`` index for index. Valid for Wan2.1's VAE (no attention
    inside the stages, no residual down blocks).
    """
    per_stage = num_res_blocks + 2
    if m := re.fullmatch(r"(quant_conv|post_quant_conv)\.(.+)", key):
        return {"quant_conv": "conv1", "post_quant_conv": "conv2"}[m[1]] + "." + m[2]
    if m := re.fullmatch(r"(encoder|decoder)\.(conv_in|norm_out|conv_out)\.(.+)", key):
        return f"{m[1]}.{dict(conv_in='conv1', norm_out='head.0', conv_out='head.2')[m[2]]}.{m[3]}"
    if m := re.fullmatch(r"(encoder|decoder)\.mid_block\.(resnets|attentions)\.(\d+)\.(.+)", key):
        if m[2] == "resnets":
            return f"{m[1]}.middle.{2 * int(m[3])}.{_resnet_to_original(m[4])}"
        return f"{m[1]}.middle.{2 * int(m[3]) + 1}.{m[4]}"
    if m := re.fullmatch(r"encoder\.down_blocks\.(\d+)\.(.+)", key):
        return f"encoder.downsamples.{m[1]}.{_resnet_to_original(m[2])}"
    if m := re.fullmatch(r"decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", key):
        return f"decoder.upsamples.{int(m[1]) * per_stage + int(m[2])}.{_resnet_to_original(m[3])}"
    if m := re.fullmatch(r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.(.+)", key):
        return f"decoder.upsamples.{int(m[1]) * per_stage + num_res_blocks + 1}.{m[2]}"
    raise KeyError(f"{key!r} is not a key of Wan2.1's VAE in diffusers layout")


def key_table(diffusers_keys: list[str], num_res_blocks: int) -> dict[str, str]:
    """{original key: diffusers key} for every key of a diffusers model."""
    return {diffusers_to_original(k, num_res_blocks): k for k in diffusers_keys}


def config_from_original(state: dict[str, Tensor]) -> dict[str, Any]:
    """``AutoencoderKLWan`` arguments read off the tensor shapes of an original-layout state dict."""
    kinds = []                                      # the encoder's flat list: "res", "resample3d", "resample2d"
    while True:
        prefix = f"encoder.downsamples.{len(kinds)}."
        if prefix + "residual.0.gamma" in state:
            kinds.append("res")
        elif prefix + "resample.1.weight" in state:
            kinds.append("resample3d" if prefix + "time_conv.weight" in state else "resample2d")
        elif any(k.startswith(prefix) for k in state):
            raise ValueError(f"{prefix}* is neither a residual block nor a resample: attention inside the stages "
                             f"(attn_scales) is not part of Wan2.1's VAE and not supported")
        else:
            break
    if "res" not in kinds or "encoder.conv1.weight" not in state or "conv2.weight" not in state:
        raise ValueError(f"not a Wan2.1 VAE in the original layout (no encoder.conv1 / downsamples / conv2): "
                         f"{WAN_FILE_HINT}")
    num_res_blocks = next((i for i, k in enumerate(kinds) if k != "res"), len(kinds))
    base_dim = state["encoder.conv1.weight"].shape[0]
    stage_ends = [i for i, k in enumerate(kinds) if k != "res"] + [len(kinds)]
    dim_mult = [state[f"encoder.downsamples.{end - 1}.residual.6.weight"].shape[0] // base_dim for end in stage_ends]
    decoder_dim = state["decoder.head.2.weight"].shape[1] // dim_mult[0]
    return dict(base_dim=base_dim, decoder_base_dim=None if decoder_dim == base_dim else decoder_dim,
                z_dim=state["conv2.weight"].shape[0], dim_mult=dim_mult, num_res_blocks=num_res_blocks,
                temperal_downsample=[kinds[end] == "resample3d" for end in stage_ends[:-1]],
                in_channels=state["encoder.conv1.weight"].shape[1],
                out_channels=state["decoder.head.2.weight"].shape[0])


def original_to_diffusers(state: dict[str, Tensor], config: dict[str, Any]) -> dict[str, Tensor]:
    """Rename an original-layout state dict into diffusers' layout for ``config``; missing, unexpected or
    mis-shaped tensors raise a ValueError naming the keys and the shapes."""
    from diffusers import AutoencoderKLWan

    with torch.device("meta"):
        reference = AutoencoderKLWan(**config).state_dict()
    table = key_table(list(reference), config.get("num_res_blocks", 2))
    missing = sorted(set(table) - set(state))
    unexpected = sorted(set(state) - set(table))
    if missing or unexpected:
        raise ValueError(f"the Wan VAE checkpoint does not match the architecture read from it: missing "
                         f"{missing[:5]}{' ...' if len(missing) > 5 else ''}, unexpected {unexpected[:5]}"
                         f"{' ...' if len(unexpected) > 5 else ''}; {WAN_FILE_HINT}")
    out = {}
    for original, name in table.items():
        if state[original].shape != reference[name].shape:
            raise ValueError(f"{original}: shape {tuple(state[original].shape)}, the architecture needs "
                             f"{tuple(reference[name].shape)} (for {name}); {WAN_FILE_HINT}")
        out[name] = state[original]
    return out


# -- loading --------------------------------------------------------------------------------------------------------
def _read_state_file(path: Path) -> dict[str, Tensor]:
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:          # pickled code (weights_only refuses it), a truncated or foreign file
        kind = "safetensors file" if path.suffix == ".safetensors" else "weights-only torch checkpoint"
        raise ValueError(f"codec wan: cannot read {path} as a {kind} ({type(err).__name__}: {err}); "
                         f"{WAN_FILE_HINT}") from None
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ValueError(f"codec wan: {path} holds no flat state dict of tensors; {WAN_FILE_HINT}")
    return state


def load_wan_vae(path: str | Path, dtype: torch.dtype = torch.float32) -> Any:
    """``AutoencoderKLWan`` from a local diffusers folder (``vae/`` or the model folder holding it) or from one
    checkpoint file in the original or the diffusers layout (Wan2.1's default latent mean and std)."""
    from diffusers import AutoencoderKLWan

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"codec wan: path={str(path)!r} does not exist; {WAN_FILE_HINT}")
    if path.is_dir():
        folder = path / "vae" if (path / "vae" / "config.json").is_file() else path
        if not (folder / "config.json").is_file():
            raise FileNotFoundError(f"codec wan: path={str(path)!r} is a folder without config.json (nor vae/"
                                    f"config.json), so not a diffusers VAE; {WAN_FILE_HINT}")
        vae = AutoencoderKLWan.from_pretrained(folder, local_files_only=True, torch_dtype=dtype)
        return vae.eval().requires_grad_(False)
    state = _read_state_file(path)
    if DIFFUSERS_PROBE not in state and ORIGINAL_PROBE not in state:
        raise ValueError(f"codec wan: {path} is not a Wan VAE checkpoint (neither {ORIGINAL_PROBE!r} nor "
                         f"{DIFFUSERS_PROBE!r} among its {len(state)} keys); {WAN_FILE_HINT}")
    try:
        if DIFFUSERS_PROBE in state:
            num_res_blocks = _decoder_res_blocks(state) - 1
            state = {diffusers_to_original(k, num_res_blocks): v for k, v in state.items()}
        config = config_from_original(state)
    except KeyError as err:           # a key that is not Wan2.1's, or one the architecture needs and lacks
        detail = err.args[0] if " " in str(err.args[0]) else f"it has no {err.args[0]!r}"
        raise ValueError(f"codec wan: {path} does not hold Wan2.1's VAE: {detail}; {WAN_FILE_HINT}") from None
    if config["z_dim"] != 16:
        raise ValueError(f"codec wan: {path} has z_dim={config['z_dim']}, but a single file carries no latent mean "
                         f"and std and Wan2.1's are for 16 channels; use a diffusers folder whose config.json has "
                         f"latents_mean / latents_std")
    weights = original_to_diffusers(state, config)
    with torch.device("meta"):
        vae = AutoencoderKLWan(**config)
    vae.load_state_dict(weights, strict=True, assign=True)
    if any(t.dtype != dtype for t in weights.values()):
        vae = vae.to(dtype)
    return vae.eval().requires_grad_(False)


def _decoder_res_blocks(state: dict[str, Tensor]) -> int:
    """Residual blocks per decoder stage in a diffusers-layout state dict."""
    return 1 + max(int(m[1]) for k in state if (m := re.match(r"decoder\.up_blocks\.0\.resnets\.(\d+)\.", k)))


# -- the codec ------------------------------------------------------------------------------------------------------
@CODECS.register("wan")
class WanCodec(LatentCodec):
    """Wan2.1's VAE: video [B, T, 3, H, W] (T = 1 + 4k) <-> normalised latents [B, 1 + k, 16, H/8, W/8] (float32).

    Args:
        path: a diffusers ``vae/`` folder (or the model folder above it), or the original ``Wan2.1_VAE.pth``.
        dtype: the VAE's weights and compute (``float32``, ``bf16``, ``fp16``); latents are float32 either way.

    The VAE is frozen and comes from ``path``, so it is kept out of ``state_dict()`` and ``parameters()``: a
    system's checkpoints do not carry its 127 M weights and no optimizer or FSDP wrapper sees them, while
    ``.to(device)`` still moves it. Encoding returns the posterior mean.
    """

    first_frame_alone = True

    def __init__(self, path: str, dtype: str = "float32"):
        super().__init__()
        if dtype not in DTYPES:
            raise ValueError(f"codec wan: dtype={dtype!r} is unknown: use one of {sorted(DTYPES)}")
        vae = load_wan_vae(path, DTYPES[dtype])
        cfg = vae.config
        if cfg.patch_size is not None or cfg.is_residual:
            raise ValueError(f"codec wan: {path} is a Wan2.2-style VAE (patch_size={cfg.patch_size}, is_residual="
                             f"{cfg.is_residual}); this codec implements Wan2.1's")
        self.__dict__["vae"] = vae                      # not a submodule: see the class docstring
        self.path, self.dtype_name = str(path), dtype
        self.latent_channels = cfg.z_dim
        self.spatial_factor = 2 ** (len(cfg.dim_mult) - 1)
        self.temporal_factor = 2 ** sum(cfg.temperal_downsample)
        if len(cfg.latents_mean) != cfg.z_dim or len(cfg.latents_std) != cfg.z_dim:
            raise ValueError(f"codec wan: {path} config has {len(cfg.latents_mean)} latents_mean and "
                             f"{len(cfg.latents_std)} latents_std values for z_dim={cfg.z_dim}; give one per channel")
        self.register_buffer("mean", torch.tensor(cfg.latents_mean).view(1, 1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(cfg.latents_std).view(1, 1, -1, 1, 1), persistent=False)

    def _apply(self, fn, recurse=True):                 # .to() / .cuda() / .double() reach the VAE too
        self.vae._apply(fn)
        return super()._apply(fn, recurse)

    # -- normalisation: float32, in realcam's [B, F, C, h, w] layout ------------------------------------------------
    def normalize(self, mu: Tensor) -> Tensor:
        """VAE posterior mean [B, C, F, h, w] -> latents [B, F, C, h, w]."""
        mu = mu.transpose(1, 2).float()
        return (mu - self.mean.float()) / self.std.float()

    def denormalize(self, latents: Tensor) -> Tensor:
        """Latents [B, F, C, h, w] -> the VAE's latent space [B, C, F, h, w] in its dtype."""
        z = latents.float() * self.std.float() + self.mean.float()
        return z.transpose(1, 2).to(self.vae.dtype)

    def _check_video(self, video: Tensor, what: str) -> None:
        if video.ndim != 5 or video.shape[2] != 3:
            raise ValueError(f"{what}: expected video [B, T, 3, H, W], got shape {tuple(video.shape)}")
        self.latent_shape(video.shape[1], video.shape[-2], video.shape[-1])

    # -- offline: diffusers' own whole-clip calls ---------------------------------------------------------------------
    def encode(self, video: Tensor) -> Tensor:
        self._check_video(video, "wan codec encode")
        x = video.transpose(1, 2).to(self.vae.dtype)
        return self.normalize(self.vae.encode(x).latent_dist.mode())

    def decode(self, latents: Tensor) -> Tensor:
        return self.vae.decode(self.denormalize(latents)).sample.transpose(1, 2).float()

    def stream(self) -> "WanStream":
        return WanStream(self)


class WanStream(CodecStream):
    """Chunk-by-chunk coding through the VAE's causal feature caches, kept here across calls (one pair per
    stream, so several streams can share one codec). Encoding takes 1 + 4k frames in the first chunk and 4k in
    every later one, split into the VAE's own pieces (1, then 4 frames); decoding takes any number of latent
    frames and gives 1 frame for the first, 4 for each after it. Equal to the codec's offline calls."""

    def __init__(self, codec: WanCodec):
        from diffusers.models.autoencoders.autoencoder_kl_wan import WanCausalConv3d

        self.codec, vae = codec, codec.vae
        self.enc_cache: list[Any] = [None] * sum(isinstance(m, WanCausalConv3d) for m in vae.encoder.modules())
        self.dec_cache: list[Any] = [None] * sum(isinstance(m, WanCausalConv3d) for m in vae.decoder.modules())
        self.frames_encoded = 0
        self.latents_decoded = 0
        self._enc_shape: tuple[int, ...] | None = None
        self._dec_shape: tuple[int, ...] | None = None

    def encode_chunk(self, video: Tensor) -> Tensor:
        """[B, n, 3, H, W] -> [B, m, C, h, w]: n = 1 + 4k at the start (m = 1 + k), then n = 4k (m = k)."""
        tf, n = self.codec.temporal_factor, video.shape[1]
        if video.ndim != 5 or video.shape[2] != 3:
            raise ValueError(f"encode_chunk: expected video [B, n, 3, H, W], got shape {tuple(video.shape)}")
        first = self.frames_encoded == 0
        if n < 1 or (n - 1 if first else n) % tf:
            need = f"1 + {tf}k frames (1, {1 + tf}, ...)" if first else f"{tf}k frames ({tf}, {2 * tf}, ...)"
            raise ValueError(f"encode_chunk got {n} frames after {self.frames_encoded}: Wan's VAE follows the 1 + "
                             f"{tf}k rule (a first frame alone, then {tf} frames per latent frame), so this chunk "
                             f"needs {need}; buffer frames until a chunk fits")
        self._enc_shape = _same_stream(self._enc_shape, video.shape, "encode_chunk")
        self.codec.latent_shape(1, video.shape[-2], video.shape[-1])
        vae = self.codec.vae
        x = video.transpose(1, 2).to(vae.dtype)
        pieces = ([x[:, :, :1]] if first else []) + list(x[:, :, 1 if first else 0:].split(tf, dim=2))
        out = []
        for piece in pieces:
            if piece.shape[2]:
                out.append(vae.encoder(piece, feat_cache=self.enc_cache, feat_idx=[0]))
        self.frames_encoded += n
        mu = vae.quant_conv(torch.cat(out, dim=2))[:, :self.codec.latent_channels]
        return self.codec.normalize(mu)

    def decode_chunk(self, latents: Tensor) -> Tensor:
        """[B, m, C, h, w] -> [B, n, 3, H, W] in [-1, 1]: n = 1 + 4(m - 1) at the start, then n = 4m."""
        if latents.ndim != 5 or latents.shape[2] != self.codec.latent_channels or latents.shape[1] < 1:
            raise ValueError(f"decode_chunk: expected latents [B, m >= 1, {self.codec.latent_channels}, h, w], got "
                             f"shape {tuple(latents.shape)}")
        self._dec_shape = _same_stream(self._dec_shape, latents.shape, "decode_chunk")
        vae = self.codec.vae
        x = vae.post_quant_conv(self.codec.denormalize(latents))
        out = []
        for i in range(x.shape[2]):
            first = self.latents_decoded == 0
            out.append(vae.decoder(x[:, :, i:i + 1], feat_cache=self.dec_cache, feat_idx=[0], first_chunk=first))
            self.latents_decoded += 1
        return torch.cat(out, dim=2).clamp(-1.0, 1.0).transpose(1, 2).float()


def _same_stream(seen: tuple[int, ...] | None, shape: torch.Size, what: str) -> tuple[int, ...]:
    """Batch and picture size fixed for a stream's lifetime (the feature caches hold that shape)."""
    key = (shape[0], *shape[2:])
    if seen is not None and key != seen:
        raise ValueError(f"{what}: chunk of shape {tuple(shape)} does not continue this stream (batch, channels, "
                         f"height, width were {seen}); start a new codec.stream() for another video")
    return key
