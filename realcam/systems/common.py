"""Plumbing shared by the LightningModules: batch -> (latents, Cond), EMA, optimizers, seeded noise."""
from __future__ import annotations

import hashlib
import inspect
import math

import torch
from timm.utils.model_ema import ModelEmaV3
from torch import Tensor, nn

from realcam import geometry
from realcam.modules.codecs import LatentCodec
from realcam.modules.cond import Cond
from realcam.registry import CODECS


def build_codec(codec: str | LatentCodec) -> LatentCodec:
    return CODECS.build(codec) if isinstance(codec, str) else codec


def prepare_batch(batch: dict, codec: LatentCodec, pose_reference: str,
                  text_dim: int | None = None) -> tuple[Tensor, Cond]:
    """A data batch (docs/data.md) -> clean target latents x0 [B, F, C, h, w] and the conditions.

    A latent batch (``source_latents`` / ``target_latents`` from encoded shards) is used as it is, and the codec is
    never called; a frame batch is encoded here. The batch's ``text`` goes to ``Cond.text``; ``text_dim`` (the
    denoiser's) makes a batch without it an error that names the fix. Target poses become relative to the source
    camera under ``pose_reference``; a temporally compressing codec gives each latent frame the camera of one
    video frame (``LatentCodec.pose_frames``).
    """
    if "target_latents" in batch:
        x0, src = batch["target_latents"].float(), batch["source_latents"].float()
        check_latents(x0, codec, batch["source_c2w"].shape[1], batch.get("key"))
        H, W = x0.shape[-2] * codec.spatial_factor, x0.shape[-1] * codec.spatial_factor
    else:
        source, target = batch["source"], batch["target"]
        H, W = source.shape[-2:]
        with torch.no_grad():
            x0, src = codec.encode(target), codec.encode(source)
    text = batch.get("text")
    if text_dim is not None and text is None:
        raise ValueError(f"the batch has no `text` but the denoiser has text_dim={text_dim}: encode the shards with "
                         f"their prompts (`realcam data encode SRC --out DIR --vae PATH --text-encoder PATH --prompt "
                         f"TEXT`) and train from DIR")
    rel = geometry.relative_poses(batch["source_c2w"].float(), batch["target_c2w"].float(), pose_reference)
    frames = torch.tensor(codec.pose_frames(x0.shape[1]), device=x0.device)
    cond = Cond(source=src, target_c2w=rel[:, frames], target_K=batch["target_K"][:, frames].float(),
                source_K=batch["source_K"][:, frames].float(), image_size=(int(H), int(W)),
                text=None if text is None else text.float())
    return x0, cond


def check_latents(latents: Tensor, codec: LatentCodec, frames: int, keys: list | None = None) -> None:
    """Stored latents [B, F, C, h, w] of ``frames`` video frames must be the codec's: its channel count, and the
    F its frame rule gives (Wan: 1 + (T - 1) / 4)."""
    fix = (f"encode the shards with the model's codec (`realcam data encode --vae PATH`) or set the model's codec "
           f"to the one that encoded them")
    if latents.ndim != 5 or latents.shape[2] != codec.latent_channels:
        raise ValueError(f"the shards' latents have shape {tuple(latents.shape)} (samples {keys}) but codec "
                         f"{type(codec).__name__} has latent_channels={codec.latent_channels}: {fix}")
    if codec.video_frames(latents.shape[1]) != frames:
        raise ValueError(f"the shards' latents have {latents.shape[1]} frames for T={frames} video frames (samples "
                         f"{keys}) but codec {type(codec).__name__} makes {codec.video_frames(latents.shape[1])} "
                         f"video frames of them: {fix}")


def check_channels(codec: LatentCodec, network: nn.Module, field: str) -> None:
    """Construction-time check that a network takes the codec's latents (one line naming both fields)."""
    channels = getattr(network, "in_channels", None)
    if channels is not None and channels != codec.latent_channels:
        name = next((n for n in CODECS if CODECS.get(n) is type(codec)), type(codec).__name__)
        raise ValueError(f"codec {name} gives {codec.latent_channels} latent channels but {field} in_channels="
                         f"{channels}: set {field}.init_args.in_channels: {codec.latent_channels} or use a codec "
                         f"with {channels} latent channels")


def save_config(module, networks: tuple[str, ...]) -> None:
    """``save_hyperparameters`` for a system whose ``__init__`` calls this, so its checkpoints describe it whole.

    Built by ``realcam fit`` (LightningCLI), the system receives its parsed config, where each network and the
    codec are ``class_path``/``init_args`` mappings: they are kept, so ``System.load_from_checkpoint(ckpt)``
    rebuilds every network and ``realcam export`` reads the run's settings from the checkpoint alone. Built in
    Python, the ``networks`` given as nn.Module instances are left out as Lightning recommends; pass them again to
    ``load_from_checkpoint``."""
    from lightning.pytorch.core.mixins.hparams_mixin import _given_hyperparameters

    frame = inspect.currentframe().f_back
    ignore = []
    if _given_hyperparameters.get() is None:     # built in Python: look through every __init__ up the class chain
        f = frame
        while f is not None and f.f_code.co_name == "__init__":
            ignore += [name for name in networks if isinstance(f.f_locals.get(name), nn.Module)]
            f = f.f_back
    module.save_hyperparameters(ignore=sorted(set(ignore)), frame=frame)


def step_generator(seed: int, step: int, rank: int = 0, stream: str = "") -> torch.Generator:
    """A generator determined by (seed, step, rank, stream): noise survives kill-and-resume exactly."""
    digest = hashlib.blake2b(f"{seed}/{step}/{rank}/{stream}".encode(), digest_size=8).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest, "little") & ((1 << 63) - 1))


def sample_generators(batch: dict, B: int, seed: int, step: int, stream: str, rank: int = 0) -> list[torch.Generator]:
    """One generator per sample of a training batch, determined by (seed, step, the sample's key, stream).

    A sample's draws (noise, sigmas, dropout) then depend neither on the rank that reads it nor on the samples
    beside it, so N processes at per-rank batch B draw exactly what one process draws at batch N x B (the
    data-parallel tests compare the two), and a resumed run draws what the uninterrupted one did. A batch without
    keys falls back to the sample's position in the global batch (``rank * B + b``)."""
    keys = batch.get("key") if isinstance(batch, dict) else None
    if keys is None or len(keys) != B:
        keys = [f"#{rank * B + b}" for b in range(B)]
    return [step_generator(seed, step, 0, f"{stream}/{key}") for key in keys]


class EMA(ModelEmaV3):
    """timm's ``ModelEmaV3`` with realcam's warm-up: before ``start_step`` the average tracks the weights (decay
    0), from then on it decays by ``decay`` per update. The averaged copy is ``.module`` (frozen, always in eval
    mode); it is a submodule, so it is checkpointed and restored on resume with the LightningModule."""

    def __init__(self, model: nn.Module, decay: float = 0.99, start_step: int = 0):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"ema decay={decay} must be in [0, 1)")
        # timm's decay is 0 while step <= update_after_step + 1, i.e. for step < start_step here
        super().__init__(model, decay=decay, update_after_step=start_step - 2)
        self.module.requires_grad_(False)   # else DDP would count the average as parameters without gradients
        self.start_step = start_step

    def train(self, mode: bool = True) -> "EMA":
        super().train(mode)
        self.module.eval()
        return self

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args, **kwargs) -> None:
        # Checkpoints written before the average was timm's keep it under `shadow.`.
        for key in [k for k in state_dict if k.startswith(prefix + "shadow.")]:
            state_dict[prefix + "module." + key[len(prefix + "shadow."):]] = state_dict.pop(key)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


def clip_gradients(module, optimizer, max_norm: float) -> Tensor:
    """Clip the gradients of ``optimizer``'s parameters to total norm ``max_norm`` through Lightning, and return
    their norm before clipping.

    ``module.clip_gradients`` (Lightning's: per optimizer, after the precision plugin unscaled them), except under
    FSDP, where a rank holds a shard of each gradient: there the root FSDP module's ``clip_grad_norm_`` reduces
    the norm over every shard (torch's FSDP docs; Lightning's FSDP precision plugin refuses norm clipping, and
    ``torch.nn.utils.clip_grad_norm_`` would clip each shard by its own norm). Under FSDP2
    (:class:`~realcam.systems.sharding.FullyShardStrategy`) the gradients are DTensors, whose norm
    ``clip_grad_norm_`` already reduces over the shards: Lightning's path is right as it is."""
    from torch.distributed.fsdp import FullyShardedDataParallel

    wrapped = module.trainer.strategy.model
    if isinstance(wrapped, FullyShardedDataParallel):
        return wrapped.clip_grad_norm_(max_norm)
    grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
    norm = _total_norm(grads)
    module.clip_gradients(optimizer, gradient_clip_val=max_norm, gradient_clip_algorithm="norm")
    return norm


def _total_norm(grads: list[Tensor]) -> Tensor:
    """The 2-norm of all ``grads`` together. Under FSDP2 a gradient is a DTensor shard: torch's
    ``get_total_norm`` reduces over the shards, and ``full_tensor`` gives every rank the same number (what
    ``clip_grad_norm_`` clips by)."""
    if not grads:
        return torch.zeros(())
    norm = torch.nn.utils.get_total_norm(grads, norm_type=2.0)
    return norm.full_tensor() if hasattr(norm, "full_tensor") else norm


def update_ema(system, network: nn.Module, step: int) -> None:
    """``system.ema.update(network, step)``; under FSDP inside ``summon_full_params(writeback=True)``, since a rank
    holds different shards of the network and of its EMA copy (both whole there, the EMA written back after)."""
    from torch.distributed.fsdp import FullyShardedDataParallel

    root = system.trainer.strategy.model
    if isinstance(root, FullyShardedDataParallel):
        with FullyShardedDataParallel.summon_full_params(root, writeback=True):
            system.ema.update(network, step)
    else:
        system.ema.update(network, step)


class ClipAndEMA:
    """Hooks for automatically optimized systems: AdamW with warm-up (and optional cosine) on the trained network
    (hparams lr, betas, weight_decay, warmup_steps, total_steps, min_lr_ratio), its gradients clipped through
    Lightning's ``configure_gradient_clipping`` (``hparams.grad_clip``, or ``trainer.gradient_clip_val`` when set),
    and its EMA updated right after each optimizer step. Here, not in on_train_batch_end: callbacks
    (ModelCheckpoint) run before the module's batch-end hook, so a checkpoint written at a step must already hold
    that step's EMA. The system names its trained network in ``trained_attr``."""

    trained_attr = "denoiser"

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None) -> None:
        max_norm = self.hparams.grad_clip if gradient_clip_val is None else gradient_clip_val
        if gradient_clip_algorithm not in (None, "norm"):
            raise ValueError(f"trainer.gradient_clip_algorithm={gradient_clip_algorithm!r}: realcam's systems clip "
                             f"by norm; leave it unset")
        if max_norm:
            self.log("train/grad_norm", clip_gradients(self, optimizer, max_norm))

    def optimizer_step(self, *args, **kwargs) -> None:
        super().optimizer_step(*args, **kwargs)
        update_ema(self, getattr(self, self.trained_attr), self.global_step)

    def configure_optimizers(self):
        hp = self.hparams
        opt, sched = adamw_with_warmup(getattr(self, self.trained_attr).parameters(), hp.lr, hp.betas,
                                       hp.weight_decay, hp.warmup_steps, hp.total_steps, hp.min_lr_ratio)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def adamw_with_warmup(params, lr: float, betas: tuple[float, float], weight_decay: float, warmup_steps: int,
                      total_steps: int | None = None, min_lr_ratio: float = 1.0):
    """AdamW plus a linear warm-up (then constant, or cosine to ``min_lr_ratio`` if total_steps is set)."""
    opt = torch.optim.AdamW(params, lr=lr, betas=tuple(betas), weight_decay=weight_decay)

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        if not total_steps or min_lr_ratio >= 1.0:
            return 1.0
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    # torch's LambdaLR, not timm.scheduler: Lightning steps and checkpoints torch schedulers itself (timm's need
    # a custom lr_scheduler_step), and warm-up + cosine is this one factor function.
    sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
    return opt, sched
