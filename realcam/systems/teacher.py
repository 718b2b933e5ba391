"""Phase 1: the bidirectional teacher, trained by cross-frame in-context learning.

The denoiser is injected (any module following ``denoiser(x, sigma, cond) -> flow``); its camera
encoder and attention backend are part of its own config. Loss: rectified flow on target tokens
only; source tokens stay clean. The camera condition is dropped with ``camera_dropout`` so the
teacher supports classifier-free guidance ``u + g (c - u)``.
"""
from __future__ import annotations

from typing import Literal

import lightning as L
import torch
from torch import Tensor, nn

from realcam.losses import flow_matching_loss
from realcam.losses.flow_matching import WEIGHTINGS
from realcam.modules.codecs import LatentCodec
from realcam.modules.flow import FlowSchedule, Generators, draw, sample_noise
from realcam.modules.samplers import euler_sample
from realcam.systems.common import (EMA, ClipAndEMA, build_codec, check_channels, prepare_batch, sample_generators,
                                    save_config, step_generator)
from realcam.systems.evaluation import EvaluatesVideos, VideoEvaluator
from realcam.systems.sharding import ShardsNetworks


class TeacherModule(ShardsNetworks, EvaluatesVideos, ClipAndEMA, L.LightningModule):
    """Args:
        denoiser: the bidirectional network (e.g. ``realcam.modules.backbone.CrossFrameDiT``).
        codec: latent codec, registry name or instance.
        shift / sigma_sampling / logit_mean / logit_std: training noise levels (rectified flow).
        sigma_per: one noise level per ``sample`` or per ``chunk`` (diffusion-forcing style).
        camera_dropout: probability of dropping the target camera (for guidance).
        pose_reference: ``first_source`` or ``current_source`` (docs/conventions.md).
        loss_weighting: ``flow`` (the flow MSE, DESIGN §2) or ``x0`` (its sigma^2-weighted form, the MSE of the
            implied x0 estimate: every noise level weighs the same; see :func:`~realcam.losses.flow_matching_loss`).
        sample_steps / guidance: the Euler sampler used in validation and test.
        ema_decay / ema_start: generator EMA; evaluation uses the EMA weights.
        seed: noise, sigmas and dropout are drawn from (seed, global step, sample key), so resume is exact and
            N processes at batch B train as one at batch N x B (docs/training.md).
    """

    def __init__(
        self,
        denoiser: nn.Module,
        codec: str | LatentCodec = "pixel",
        shift: float = 3.0,
        sigma_sampling: Literal["logit_normal", "uniform"] = "logit_normal",
        logit_mean: float = 0.0,
        logit_std: float = 1.0,
        sigma_per: Literal["sample", "chunk"] = "sample",
        camera_dropout: float = 0.1,
        pose_reference: Literal["first_source", "current_source"] = "first_source",
        lr: float = 3e-4,
        betas: tuple[float, float] = (0.9, 0.99),
        weight_decay: float = 0.01,
        warmup_steps: int = 100,
        total_steps: int | None = None,
        min_lr_ratio: float = 1.0,
        grad_clip: float = 1.0,
        loss_weighting: Literal["flow", "x0"] = "flow",
        ema_decay: float = 0.995,
        ema_start: int = 100,
        sample_steps: int = 50,
        guidance: float = 1.0,
        eval_videos: int = 4,
        save_videos: int = 2,
        lpips_backbone_weights: str | None = None,
        seed: int = 0,
    ):
        super().__init__()
        save_config(self, ("denoiser", "codec"))
        if loss_weighting not in WEIGHTINGS:    # named before training starts, not at the first step
            raise ValueError(f"loss_weighting={loss_weighting!r}: choose one of {WEIGHTINGS}")
        self.denoiser = denoiser
        self.codec = build_codec(codec)
        check_channels(self.codec, denoiser, "denoiser")
        self.schedule = FlowSchedule(shift=shift)
        self.ema = EMA(denoiser, ema_decay, ema_start)
        self.evaluator = VideoEvaluator(lpips_backbone_weights)

    @property
    def text_dim(self) -> int | None:
        """The denoiser's text width: batches must then carry ``text`` (encoded shards)."""
        return getattr(self.denoiser, "text_dim", None)

    # ---- training --------------------------------------------------------------------------------
    def sample_sigma(self, B: int, Fr: int, g: Generators, like: Tensor) -> Tensor:
        hp = self.hparams
        if hp.sigma_per == "sample":
            shape = (B, 1)
        else:
            shape = (B, -(-Fr // self.denoiser.chunk_frames))
        sigma = self.schedule.sample_training_sigma(shape, mode=hp.sigma_sampling, generator=g,
                                                    mean=hp.logit_mean, std=hp.logit_std)
        if hp.sigma_per == "chunk":
            sigma = sigma.repeat_interleave(self.denoiser.chunk_frames, dim=1)[:, :Fr]
        return sigma.expand(B, Fr).to(like.device, torch.float32)

    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        x0, cond = prepare_batch(batch, self.codec, self.hparams.pose_reference, self.text_dim)
        B, Fr = x0.shape[:2]
        g = sample_generators(batch, B, self.hparams.seed, self.global_step, "teacher", self.global_rank)
        sigma = self.sample_sigma(B, Fr, g, x0)
        noise = sample_noise(x0.shape, g, x0)
        keep = (draw(torch.rand, B, g) >= self.hparams.camera_dropout).float().to(x0.device)
        cond.camera_keep = keep
        loss = flow_matching_loss(self.denoiser, x0, cond, self.schedule, sigma, noise,
                                  weighting=self.hparams.loss_weighting)
        self.log("train/loss", loss, prog_bar=True, batch_size=B)
        self.log("train/frames", float(Fr), batch_size=B)
        return loss

    # ---- sampling --------------------------------------------------------------------------------
    @torch.no_grad()
    def generate(self, batch: dict, steps: int | None = None, guidance: float | None = None,
                 use_ema: bool = True, seed: int | None = None) -> Tensor:
        """Sample target videos [B, T, 3, H, W] in [-1, 1] for a batch with the Euler sampler."""
        hp = self.hparams
        x0, cond = prepare_batch(batch, self.codec, hp.pose_reference, self.text_dim)
        model = self.ema.module if use_ema else self.denoiser
        g = step_generator(hp.seed if seed is None else seed, 0, 0, "sample")
        noise = sample_noise(x0.shape, g, x0)
        sigmas = self.schedule.teacher_sigmas(steps or hp.sample_steps).to(x0.device)
        guidance = hp.guidance if guidance is None else guidance
        uncond = cond.without_camera() if guidance != 1.0 else None
        latents = euler_sample(model, noise, cond, sigmas, guidance=guidance, uncond=uncond)
        return self.codec.decode(latents).clamp(-1, 1)

    def report_meta(self) -> dict:
        return {"sampler": "euler", "sample_steps": self.hparams.sample_steps, "guidance": self.hparams.guidance,
                "layout": getattr(self.denoiser, "layout", None)}
