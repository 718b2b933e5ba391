"""``realcam bench gpu``'s training items: a few Lightning steps of each system on in-memory latent batches.

Run by :mod:`realcam.bench.gpu` (its docstring says what the check runs); split off because the latent batches
and the Lightning fit are their own concern.
"""
from __future__ import annotations

import statistics
import time
from dataclasses import replace

import torch

from realcam.bench._common import sync
from realcam.bench.gpu_profile import SHIFT, STEPS, Budget, Profile, random_network
from realcam.modules.flow import FlowSchedule


# ---- the batches ------------------------------------------------------------------------------------------
def latent_batch(codec, profile: Profile, text_dim: int, device: torch.device, batch: int = 1) -> dict:
    """A training batch as `realcam data encode` shards give it (docs/data.md): cameras at video rate,
    ``source_latents`` / ``target_latents`` [B, F, C, h, w] (the codec's encoding of random frames), ``text``
    [B, L, D]; no pixel frames, so no step runs the VAE."""
    F, (h, w) = profile.train_frames, profile.train_grid
    T, H, W = codec.temporal_factor * (F - 1) + 1, codec.spatial_factor * h, codec.spatial_factor * w
    g = torch.Generator().manual_seed(0)
    frames = {k: torch.rand(batch, T, 3, H, W, generator=g) * 2 - 1 for k in ("source", "target")}
    c2w = torch.eye(4).repeat(batch, T, 1, 1)
    c2w[..., 0, 3] = torch.linspace(0, 0.5, T)                 # the target slides right of the static source
    K = torch.tensor([[float(W), 0, W / 2], [0, float(W), H / 2], [0, 0, 1]]).expand(batch, T, 3, 3)
    with torch.no_grad():
        latents = {f"{k}_latents": codec.to(device).encode(v.to(device)).cpu() for k, v in frames.items()}
    return {**latents, "source_c2w": torch.eye(4).repeat(batch, T, 1, 1), "target_c2w": c2w,
            "source_K": K.clone(), "target_K": K.clone(), "revisit": torch.full((batch, T), -1),
            "length": T, "key": [f"gpu_check_{b}" for b in range(batch)],
            "scene_id": [f"random_{b}" for b in range(batch)], "strategy": ["none"] * batch,
            "text": torch.randn(batch, profile.text_tokens, text_dim, generator=g)}


def _to(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}


def ode_batch(batch: dict, codec, schedule: FlowSchedule) -> dict:
    """An ODE-pair batch (``collate_ode_pairs``' fields, text in ``cond``): random teacher states at the student's
    sigmas around the batch's target latents."""
    from realcam.systems.common import prepare_batch

    x0, cond = prepare_batch(batch, codec, "current_source")
    sigmas = schedule.student_sigmas()
    g = torch.Generator().manual_seed(2)
    noise = torch.randn(x0.shape, generator=g).to(x0)
    states = torch.stack([(1 - s) * x0 + s * noise for s in sigmas.tolist()], dim=1)
    return {"states": states, "sigmas": sigmas, "x0": x0, "target": x0, "key": batch["key"],
            "cond": replace(cond, text=batch["text"].to(x0.device))}


def build_system(kind: str, profile: Profile, codec, args, device: torch.device):
    """teacher / ode_init / dmd with random networks of the profile's preset and the wan1.3b recipe values."""
    from realcam.systems.student import OdeInitModule, SelfForcingDMDModule
    from realcam.systems.teacher import TeacherModule

    def net(mode: str):
        extra = {"sink_chunks": args.sink, "window_chunks": args.window} if mode == "causal" else {}
        return random_network(profile, device, attention_mode=mode, **extra)

    common = dict(codec=codec, shift=SHIFT)
    if kind == "teacher":
        return TeacherModule(denoiser=net("bidirectional"), lr=1e-5, warmup_steps=1, **common)
    if kind == "ode_init":
        return OdeInitModule(generator=net("causal"), denoising_steps=STEPS, lr=2e-6, warmup_steps=1, **common)
    return SelfForcingDMDModule(generator=net("causal"), real_score=net("bidirectional"), denoising_steps=STEPS,
                                generator_lr=2e-6, critic_lr=4e-7, critic_ratio=5, guidance=3.0, **common)


def train_steps(kind: str, profile: Profile, codec, args, budget: Budget, device: torch.device) -> dict:
    """``args.train_steps`` steps of Lightning's Trainer (bf16-mixed, one device) from an in-memory DataLoader."""
    import lightning as L
    from torch.utils.data import DataLoader

    system = build_system(kind, profile, codec, args, device)
    network = system.denoiser if kind == "teacher" else system.generator
    batch = latent_batch(system.codec, profile, network.text_dim, device)
    if kind == "ode_init":
        batch = ode_batch(_to(batch, device), system.codec, system.schedule)
    timer = step_timer(device, budget)
    trainer = L.Trainer(accelerator="gpu" if device.type == "cuda" else "cpu",
                        devices=[device.index or 0] if device.type == "cuda" else 1,
                        precision="bf16-mixed" if profile.dtype == "bf16" else "32-true",
                        max_steps=args.train_steps, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                        limit_val_batches=0, callbacks=[timer])
    trainer.fit(system, DataLoader([batch] * args.train_steps, batch_size=None))
    if not timer.times:
        raise RuntimeError("no training step finished")
    later = timer.times[1:] or timer.times
    params = sum(p.numel() for p in network.parameters())
    return {"steps": len(timer.times), "step_s": timer.times, "first_step_s": timer.times[0],
            "step_s_median_after_first": statistics.median(later), "network_params": params,
            "latent_shape": [profile.train_frames, network.in_channels, *profile.train_grid],
            "text_tokens": profile.text_tokens, "precision": trainer.precision}


def step_timer(device: torch.device, budget: Budget):
    """A Lightning callback timing each training step (synchronized on CUDA) that stops the fit when the budget
    runs out (built here: Lightning is imported only when a training item runs)."""
    from lightning.pytorch.callbacks import Callback

    class StepTimer(Callback):
        def __init__(self):
            self.times, self.t0 = [], 0.0

        def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
            sync(device)
            self.t0 = time.perf_counter()

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
            sync(device)
            self.times.append(time.perf_counter() - self.t0)
            if budget.left() < 0:
                trainer.should_stop = True

    return StepTimer()


