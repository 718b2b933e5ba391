"""Phase 2: the causal few-step student (DESIGN §1.2 and §2).

* :class:`OdeInitModule` regresses the causal generator's one-step x0 onto the teacher's ODE samples
  (CausVid ODE init), every chunk at its own random student step, under block-causal attention.
* :class:`SelfForcingDMDModule` rolls the generator out with its KV cache exactly as at inference
  (:func:`~realcam.rollout.causal_rollout`) and trains it with Distribution Matching Distillation
  against a frozen real score (the teacher) and a trainable critic (the fake score).

Both evaluate by streaming rollout with the generator's EMA weights, so validation numbers are the numbers a
user of ``realcam stream`` gets. Networks are injected: an instance (YAML ``class_path``) or a backbone registry
name, each optionally initialized from a checkpoint (:mod:`realcam.networks`).
"""
from __future__ import annotations

import copy
from typing import Literal, Sequence

import lightning as L
import torch
from torch import Tensor, nn

from realcam.losses import critic_loss, dmd_generator_loss, ode_regression_loss
from realcam.modules.codecs import LatentCodec
from realcam.modules.cond import Cond
from realcam.modules.flow import FlowSchedule, draw
from realcam.modules.protocol import check_causal
from realcam.systems.common import (EMA, ClipAndEMA, adamw_with_warmup, build_codec, check_channels, clip_gradients,
                                    prepare_batch, sample_generators, save_config, step_generator, update_ema)
from realcam.systems.evaluation import EvaluatesVideos, VideoEvaluator
from realcam.systems.sharding import ShardsNetworks
from realcam.networks import build_network, load_network_weights
from realcam.rollout import causal_rollout

DEFAULT_STEPS = (1000, 750, 500, 250)


def loop_consistency_loss(x: Tensor, revisit: Tensor) -> Tensor:
    """Mean squared difference between each LoopAug revisit frame and the earlier frame it revisits.

    x [B, F, C, h, w] (one latent frame per video frame); revisit [B, F] holds m at a revisit n -> m, else -1.
    The earlier frame is the anchor (detached): a stream cannot change what it already showed.
    Returns 0 (attached to x's graph) when the batch has no revisit.
    """
    if revisit.shape != x.shape[:2]:
        raise ValueError(f"revisit {tuple(revisit.shape)} must be [B, F] = {tuple(x.shape[:2])}: the loop term "
                         f"needs one latent frame per video frame (a codec with temporal_factor 1)")
    b, n = torch.nonzero(revisit >= 0, as_tuple=True)
    if len(b) == 0:
        return x.sum() * 0.0
    m = revisit[b, n]
    return (x[b, n].float() - x[b, m].detach().float()).square().mean()


class StudentModule(ShardsNetworks, EvaluatesVideos, L.LightningModule):
    """The causal generator, its EMA, the shared schedule and evaluation by streaming rollout.

    Args:
        generator: the causal network (instance, or a backbone registry name plus ``generator_args``).
        generator_init: checkpoint to start from (the teacher's, for ODE init; the ODE init's, for DMD).
        generator_init_weights: ``ema`` (default) or ``raw`` weights of that checkpoint.
        codec / shift / denoising_steps / pose_reference: must match the teacher and the ODE pairs.
        ema_decay / ema_start: generator EMA (evaluation and export use it).
        eval_videos / save_videos / lpips_backbone_weights: evaluation, as the teacher's.
        seed: all noise comes from (seed, step, sample key): resume is exact, and data-parallel runs draw what
            one process draws at the same global batch (docs/training.md).
    """

    def __init__(self, generator: nn.Module | str = "tiny", generator_args: dict | None = None,
                 generator_init: str | None = None, generator_init_weights: Literal["ema", "raw"] = "ema",
                 codec: str | LatentCodec = "pixel", shift: float = 3.0,
                 denoising_steps: Sequence[int] = DEFAULT_STEPS,
                 pose_reference: Literal["first_source", "current_source"] = "current_source",
                 ema_decay: float = 0.99, ema_start: int = 100, eval_videos: int = 4, save_videos: int = 2,
                 lpips_backbone_weights: str | None = None, seed: int = 0):
        super().__init__()
        # every subclass's arguments too (Lightning reads the __init__ frames up the stack)
        save_config(self, ("generator", "real_score", "critic", "codec"))
        self.generator = build_network(generator, generator_args, "generator")
        check_causal(self.generator, "generator")
        if generator_init:
            load_network_weights(self.generator, generator_init, generator_init_weights, "generator_init")
        self.codec = build_codec(codec)
        check_channels(self.codec, self.generator, "generator")
        self.schedule = FlowSchedule(shift=shift, denoising_steps=tuple(denoising_steps))
        self.ema = EMA(self.generator, ema_decay, ema_start)
        self.evaluator = VideoEvaluator(lpips_backbone_weights)

    @property
    def text_dim(self) -> int | None:
        """The generator's text width: batches must then carry ``text`` (encoded shards)."""
        return getattr(self.generator, "text_dim", None)

    @property
    def sigmas(self) -> Tensor:
        return self.schedule.student_sigmas()

    @torch.no_grad()
    def generate(self, batch: dict, use_ema: bool = True, seed: int | None = None) -> Tensor:
        """Stream the batch's target videos [B, T, 3, H, W] in [-1, 1] with the KV cache (sink + window)."""
        _, cond = prepare_batch(batch, self.codec, self.hparams.pose_reference, self.text_dim)
        model = self.ema.module if use_ema else self.generator
        g = step_generator(self.hparams.seed if seed is None else seed, 0, 0, "sample")
        latents = causal_rollout(model, cond, self.sigmas, g).x0
        return self.codec.decode(latents).clamp(-1, 1)

    def report_meta(self) -> dict:
        g = self.generator
        return {"sampler": "causal_rollout", "denoising_steps": list(self.schedule.denoising_steps),
                "sigmas": [round(float(s), 6) for s in self.sigmas], "chunk_frames": g.chunk_frames,
                "sink_chunks": g.sink_chunks, "window_chunks": g.window_chunks}


class OdeInitModule(ClipAndEMA, StudentModule):
    """ODE regression on teacher trajectories (train on :class:`~realcam.systems.ode_datamodule.OdePairDataModule`).

    Each chunk of each sample draws its own step index j; its frames enter at the stored teacher state for the
    student's sigma_j, and the loss is the MSE of the one-step x0 prediction to the teacher's final sample, on
    noisy frames only. Attention is block-causal over chunks (the generator's own mask).
    """

    trained_attr = "generator"

    def __init__(self, lr: float = 1e-4, betas: tuple[float, float] = (0.9, 0.99), weight_decay: float = 0.01,
                 warmup_steps: int = 50, total_steps: int | None = None, min_lr_ratio: float = 1.0,
                 grad_clip: float = 1.0, **student):
        """``student``: :class:`StudentModule`'s arguments (generator, codec, schedule, EMA, evaluation, seed)."""
        super().__init__(**student)

    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        states, sigmas, x0, cond = batch["states"], batch["sigmas"], batch["x0"], batch["cond"]
        if self.text_dim is not None and cond.text is None:
            raise ValueError(f"the ODE pairs hold no text.npy but the generator has text_dim={self.text_dim}: make "
                             f"them with a text-conditioned teacher from encoded shards (`realcam data encode ... "
                             f"--text-encoder PATH --prompt TEXT`, then `realcam data make-ode-pairs`)")
        if sigmas.shape != self.sigmas.shape or not torch.allclose(sigmas.float().cpu(), self.sigmas, atol=1e-6):
            raise ValueError(f"the ODE pairs hold sigmas {sigmas.tolist()} but this module's schedule (shift="
                             f"{self.schedule.shift}, denoising_steps={list(self.schedule.denoising_steps)}) gives "
                             f"{self.sigmas.tolist()}: use one shift and one step list for pairs and student")
        B, S, Fr = states.shape[:3]
        c = self.generator.chunk_frames
        g = sample_generators(batch, B, self.hparams.seed, self.global_step, "ode", self.global_rank)
        step = (draw(torch.rand, (B, -(-Fr // c)), g) * S).long().clamp_max(S - 1)     # a random step per chunk
        step = step.repeat_interleave(c, dim=1)[:, :Fr].to(states.device)
        index = step.view(B, 1, Fr, 1, 1, 1).expand(B, 1, Fr, *states.shape[3:])
        x_t = states.gather(1, index).squeeze(1)
        sigma = sigmas.to(states.device, torch.float32)[step]
        loss = ode_regression_loss(self.generator, x_t, sigma, cond, x0)
        self.log("train/loss", loss, prog_bar=True, batch_size=B)
        return loss


class SelfForcingDMDModule(StudentModule):
    """Self-Forcing DMD with manual optimization (train on LoopSequence shards: only conditions are used,
    plus the revisit map for the optional loop term).

    Every iteration: one critic step (flow matching on a fresh, detached rollout); every ``critic_ratio``-th
    iteration first one generator step (rollout with gradient at one random exit step shared by all chunks, DMD
    loss against real score and critic, plus ``loop_weight`` times the LoopAug loop term).

    Args (beyond :class:`StudentModule`'s):
        real_score / real_score_args / real_score_init: the frozen bidirectional teacher (required weights).
        critic / critic_args / critic_init: the fake score, bidirectional and trainable; initialized from
            ``critic_init`` (default: ``real_score_init``).
        guidance: g of the real score, ``u + g (c - u)``.
        critic_ratio: critic updates per generator update (default 5).
        generator_lr / critic_lr / betas / weight_decay / warmup_steps / grad_clip: two AdamW optimizers.
        sigma_range: DMD and critic noise levels (uniform, shifted, clamped).
        loop_weight: weight of :func:`loop_consistency_loss` (0 = off, the default: ablate it).
        accumulate: micro-batches per DMD iteration (gradient accumulation: manual optimization cannot take
            ``trainer.accumulate_grad_batches``). Each network steps once per iteration on the mean of its
            micro-batches' losses, which equals one batch of ``accumulate`` times the size (see
            :meth:`training_step`).
    """

    def __init__(self, real_score: nn.Module | str = "tiny", critic: nn.Module | str | None = None,
                 real_score_args: dict | None = None, critic_args: dict | None = None,
                 real_score_init: str | None = None, critic_init: str | None = None,
                 guidance: float = 1.0, critic_ratio: int = 5, generator_lr: float = 2e-6, critic_lr: float = 4e-7,
                 betas: tuple[float, float] = (0.0, 0.999), weight_decay: float = 0.01, warmup_steps: int = 0,
                 grad_clip: float = 10.0, sigma_range: tuple[float, float] = (0.02, 0.98), loop_weight: float = 0.0,
                 ema_start: int = 20, accumulate: int = 1, **student):
        """``student``: :class:`StudentModule`'s arguments (generator, codec, schedule, EMA, evaluation, seed);
        the EMA starts earlier here (``ema_start`` 20)."""
        if critic_ratio < 1:          # the cheap checks first, before any network is built
            raise ValueError(f"critic_ratio={critic_ratio} must be >= 1 (critic updates per generator update)")
        if accumulate < 1:
            raise ValueError(f"accumulate={accumulate} must be >= 1 (micro-batches per DMD iteration)")
        if loop_weight < 0:
            raise ValueError(f"loop_weight={loop_weight} must be >= 0 (0 turns the LoopAug loop term off)")
        super().__init__(ema_start=ema_start, **student)
        self.automatic_optimization = False
        self.real_score = build_network(real_score, real_score_args, "real_score")
        if real_score_init:
            load_network_weights(self.real_score, real_score_init, "ema", "real_score_init")
        self.real_score.requires_grad_(False).eval()
        # default critic: the real score's architecture, a separate trainable copy
        self.critic = _clone_arch(self.real_score) if critic is None else build_network(critic, critic_args, "critic")
        init = critic_init or real_score_init
        if init:
            load_network_weights(self.critic, init, "ema", "critic_init")
        for name, net in (("real_score", self.real_score), ("critic", self.critic)):
            if net.attention_mode != "bidirectional":
                raise ValueError(f"{name} must be bidirectional (it scores whole videos): set "
                                 f"{name}.init_args.attention_mode: bidirectional")
            check_channels(self.codec, net, name)
            if getattr(net, "text_dim", None) != self.text_dim:
                raise ValueError(f"{name} has text_dim={getattr(net, 'text_dim', None)} but the generator has "
                                 f"text_dim={self.text_dim}: the three networks share one Cond.text; give them one "
                                 f"text_dim")
        self.register_buffer("iteration", torch.zeros((), dtype=torch.long))
        self._micro: list[tuple[dict, Cond, list]] = []     # this iteration's micro-batches so far (accumulation)

    def train(self, mode: bool = True):
        super().train(mode)
        self.real_score.eval()          # frozen: never in training mode
        return self

    def configure_optimizers(self):
        hp = self.hparams
        gen_opt, gen_sched = adamw_with_warmup(self.generator.parameters(), hp.generator_lr, hp.betas,
                                               hp.weight_decay, max(1, hp.warmup_steps))
        critic_opt, critic_sched = adamw_with_warmup(self.critic.parameters(), hp.critic_lr, hp.betas,
                                                     hp.weight_decay, max(1, hp.warmup_steps))
        return [gen_opt, critic_opt], [gen_sched, critic_sched]

    def _own_gradient_sync(self) -> bool:
        """Under DDP, turn the reducer off for this step; :meth:`_update` then synchronizes network by network.

        DDP keeps one reducer over every trainable parameter of the LightningModule (generator and critic) and
        expects each backward to reach all of them; a DMD backward reaches only the network it updates (the
        generator step's scores run without gradients, the critic step's rollout is detached), and 4 iterations
        in 5 update only the critic. That is the "parameters that were not used in producing the loss" crash.
        So the reducer stays off during the step (what ``DistributedDataParallel.no_sync`` does; Lightning turns
        it back on after each step) and :meth:`_update` averages exactly the stepped network's gradients over
        the ranks through the strategy, before clipping, as DDP would have. FSDP reduces each network's
        gradients itself."""
        wrapped = self.trainer.strategy.model
        if isinstance(wrapped, torch.nn.parallel.DistributedDataParallel):
            wrapped.require_backward_grad_sync = False
            return True
        return False

    def _average_gradients(self, net: nn.Module) -> None:
        grads = [p.grad for p in net.parameters() if p.grad is not None]
        if not grads:
            return
        flat = self.trainer.strategy.reduce(torch.cat([g.reshape(-1) for g in grads]), reduce_op="mean")
        for g, part in zip(grads, flat.split([g.numel() for g in grads])):
            g.copy_(part.view_as(g))

    def _backward(self, loss: Tensor, first: bool, opt) -> None:
        """Backward of one micro-batch's loss, scaled by 1 / accumulate so the summed gradients are the mean's.
        The first micro-batch of a step starts from no gradient (only the stepped network holds any: FSDP1
        clips every gradient of its root)."""
        if first:
            opt.zero_grad(set_to_none=True)
        self.manual_backward(loss / self.hparams.accumulate)

    def _step(self, net: nn.Module, opt, sched, counts: bool) -> Tensor:
        """Synchronize (under DDP), clip through Lightning, step, clear the gradients. Only the critic's step
        ``counts`` towards ``trainer.global_step``, so that global_step (max_steps, checkpoint names, the data
        draw) counts DMD iterations."""
        if self._sync_grads:
            self._average_gradients(net)
        norm = clip_gradients(self, opt, self.hparams.grad_clip)
        if counts:
            opt.step()
        else:
            opt.optimizer.step()        # the bare torch optimizer: no progress bookkeeping
        sched.step()
        opt.zero_grad(set_to_none=True)
        return norm

    def _exit_steps(self, it: int, generator_turn: bool) -> tuple[int | None, int]:
        """(the generator's exit step or None, the critic rollout's), drawn from (seed, iteration) alone: the same
        on every rank and for every micro-batch of the iteration."""
        shared = step_generator(self.hparams.seed, it, 0, "dmd/exit")
        S = len(self.sigmas)
        first = int(torch.randint(S, (1,), generator=shared))
        return (first, int(torch.randint(S, (1,), generator=shared))) if generator_turn else (None, first)

    def training_step(self, batch: dict, batch_idx: int) -> None:
        """One micro-batch of a DMD iteration (``accumulate`` of them make an iteration). On a generator turn
        (every ``critic_ratio``-th iteration) each micro-batch adds its generator gradient and is kept; the last
        one steps the generator, then the critic trains on every kept micro-batch through the stepped generator,
        as one batch would. Otherwise each micro-batch adds its critic gradient at once. Every draw comes from
        (seed, iteration, sample key), so the micro-batches draw what one batch of their samples draws."""
        hp = self.hparams
        it = int(self.iteration)
        self._sync_grads = self._own_gradient_sync()
        generator_turn = it % hp.critic_ratio == 0
        _, cond = prepare_batch(batch, self.codec, hp.pose_reference, self.text_dim)
        B = cond.source.shape[0]
        g = sample_generators(batch, B, hp.seed, it, "dmd", self.global_rank)
        self._micro.append((batch, cond, g) if generator_turn else (None, None, None))
        n, last = len(self._micro), len(self._micro) == hp.accumulate
        gen_exit, critic_exit = self._exit_steps(it, generator_turn)
        logs: dict[str, Tensor] = {}
        if generator_turn:
            logs.update(self._generator_micro_step(batch, cond, g, gen_exit, first=n == 1, last=last))
            critic_turns = list(enumerate(self._micro)) if last else []
        else:
            critic_turns = [(n - 1, (batch, cond, g))]
        critic = [self._critic_micro_step(c, gs, critic_exit, first=i == 0, last=i == hp.accumulate - 1, logs=logs)
                  for i, (_, c, gs) in critic_turns]
        if critic:
            logs["train/critic_loss"] = torch.stack(critic).mean()
            self.log("train/critic", logs["train/critic_loss"], prog_bar=True, batch_size=B)
        if last:
            self._micro = []
            self.iteration += 1
            logs["train/iteration"] = self.iteration.float()
        self.log_dict(logs, prog_bar=False, batch_size=B)

    def _generator_micro_step(self, batch: dict, cond: Cond, g: list, exit_step: int, first: bool,
                              last: bool) -> dict[str, Tensor]:
        """Rollout with gradient at ``exit_step``, DMD loss (+ the loop term), backward; the generator steps on
        the ``last`` micro-batch."""
        hp = self.hparams
        gen_opt, _ = self.optimizers()
        x = causal_rollout(self.generator, cond, self.sigmas, g, exit_step=exit_step).x0
        uncond = cond.without_camera() if hp.guidance != 1.0 else None
        loss, dmd_logs = dmd_generator_loss(x, self.real_score, self.critic, cond, uncond, self.schedule,
                                            hp.guidance, g, sigma_range=tuple(hp.sigma_range))
        logs = {f"train/dmd_{k}": v for k, v in dmd_logs.items()}
        logs["train/dmd_loss"] = loss.detach().float()
        if hp.loop_weight > 0:
            loop = loop_consistency_loss(x, batch["revisit"].to(x.device))
            loss = loss + hp.loop_weight * loop
            logs["train/loop_loss"] = loop.detach()
        self._backward(loss, first, gen_opt)
        if last:
            logs["train/generator_grad_norm"] = self._step(self.generator, gen_opt, self.lr_schedulers()[0], False)
            update_ema(self, self.generator, int(self.iteration) // hp.critic_ratio)
        return logs

    def _critic_micro_step(self, cond: Cond, g: list, exit_step: int, first: bool, last: bool,
                           logs: dict[str, Tensor]) -> Tensor:
        """Flow matching of the critic on a fresh, detached rollout; the critic steps on the ``last`` one (its
        gradient norm goes into ``logs``). Returns the loss, detached."""
        hp = self.hparams
        _, critic_opt = self.optimizers()
        with torch.no_grad():
            x = causal_rollout(self.generator, cond, self.sigmas, g, exit_step=exit_step).x0
        closs, _ = critic_loss(self.critic, x, cond, self.schedule, g, sigma_range=tuple(hp.sigma_range))
        self._backward(closs, first, critic_opt)
        if last:
            logs["train/critic_grad_norm"] = self._step(self.critic, critic_opt, self.lr_schedulers()[1], True)
        return closs.detach()


def _clone_arch(net: nn.Module) -> nn.Module:
    return copy.deepcopy(net).requires_grad_(True).train()
