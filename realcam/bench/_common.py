"""Shared pieces of the benchmarks: machine facts, dtype contexts, model builders, timers, the matmul peak."""
from __future__ import annotations

import json
import os
import platform
import statistics
import time
from contextlib import nullcontext
from pathlib import Path

import torch
from torch import nn

from realcam.modules.cond import Cond
from realcam.registry import BACKBONES

DEFAULT_OUT = Path("docs/benchmarks")


def machine_info() -> dict:
    cpu = platform.processor() or platform.machine()
    try:   # the model name says more than "x86_64"
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"torch": torch.__version__, "python": platform.python_version(), "cpu": cpu,
            "cpu_count": os.cpu_count(), "threads": torch.get_num_threads(),
            "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


def autocast(device: str, dtype: str):
    if dtype == "fp32":
        return nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16)


def sync(device: str | torch.device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def randomize_(model: nn.Module, seed: int = 0, std: float = 0.02) -> nn.Module:
    """Small random values for the zero-initialized parameters (heads, gates, modulation), so every layer does
    real work on realistic activations; speed does not depend on the values, only on the shapes."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if not p.any():
                p.copy_(torch.randn(p.shape, generator=g) * std)
    return model


def build_student(preset: str = "tiny", sink: int = 1, window: int | None = 6, attention: str = "sdpa",
                  weights: str | Path | None = None, model_args: dict | None = None, device: str = "cpu") -> nn.Module:
    """The causal student of a preset (random weights), or loaded from ``weights``.

    weights: a bundle folder (``realcam export``; its own config wins) or a Lightning ``.ckpt`` /
    ``.safetensors`` of a network with the preset's shapes (``realcam.networks.load_network_weights``).
    """
    if weights is not None and Path(weights).is_dir():
        from realcam.bundle import load_bundle

        return load_bundle(weights).network.to(device).eval()
    net = BACKBONES.build(preset, **{"attention_mode": "causal", "sink_chunks": sink, "window_chunks": window,
                                     "attention": attention, **(model_args or {})})
    if weights is not None:
        from realcam.networks import load_network_weights

        load_network_weights(net, weights, field="--student")
    else:
        randomize_(net)
    return net.to(device).eval()


def build_teacher(preset: str = "tiny", layout: str = "interleaved", attention: str = "sdpa",
                  model_args: dict | None = None, device: str = "cpu") -> nn.Module:
    """The bidirectional teacher of a preset with random weights (``layout``: interleaved or prefix)."""
    net = BACKBONES.build(preset, **{"attention_mode": "bidirectional", "layout": layout, "attention": attention,
                                     **(model_args or {})})
    return randomize_(net).to(device).eval()


def random_cond(model, frames: int, grid: tuple[int, int], batch: int = 1, device: str = "cpu",
                seed: int = 0) -> tuple[torch.Tensor, Cond]:
    """Random latents [B, F, C, h, w] and conditions (a small random camera motion) at a latent grid."""
    g = torch.Generator().manual_seed(seed)
    h, w = grid
    x = torch.randn(batch, frames, model.in_channels, h, w, generator=g)
    c2w = torch.eye(4).repeat(batch, frames, 1, 1)
    c2w[..., :3, 3] = torch.randn(batch, frames, 3, generator=g) * 0.1
    size = (2 * h, 2 * w)
    K = torch.tensor([[float(size[1]), 0, size[1] / 2], [0, float(size[1]), size[0] / 2], [0, 0, 1]])
    cond = Cond(torch.randn(x.shape, generator=g), c2w, K.repeat(batch, frames, 1, 1), size)
    return x.to(device), cond.to(device)


def timed(fn, device: str | torch.device = "cpu") -> float:
    """Seconds one call of ``fn()`` takes (synchronized on CUDA)."""
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t0


def median_ms(times: list[float]) -> float:
    return 1e3 * statistics.median(times)


def quantile_ms(times: list[float], q: float) -> float:
    t = sorted(times)
    return 1e3 * t[min(len(t) - 1, int(round(q * (len(t) - 1))))]


@torch.no_grad()
def matmul_peak(device: str, dtype: torch.dtype = torch.bfloat16, size: int = 2048, repeats: int = 5) -> dict:
    """Achieved FLOP/s of one large square matmul (best of ``repeats``): this machine's practical peak."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    a @ b   # warm-up (thread pool, kernel selection)
    best = min(timed(lambda: a @ b, device) for _ in range(repeats))
    return {"size": size, "dtype": str(dtype).replace("torch.", ""), "seconds": best,
            "flops_per_s": 2 * size**3 / best}


def write_json(result: dict, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2))
    return path


def push_in_turn(gens: dict, image_size: tuple[int, int], frames: int, warmup: int) -> tuple[dict, dict]:
    """Time ``StreamingGenerator.push`` of every generator in ``gens`` in turn (so the machine's drift hits them
    alike) on one random frame and a target camera 0.2 m to the right of the source -> (per-key push times in
    seconds, per-key outputs of the warm-up pushes)."""
    import numpy as np
    from tqdm import tqdm

    frame = np.random.default_rng(0).integers(0, 255, (*image_size, 3), dtype=np.uint8)
    pose = np.eye(4)
    pose[0, 3] = 0.2
    outs = {key: [gen.push(frame, pose) for _ in range(warmup)] for key, gen in gens.items()}
    times = {key: [] for key in gens}
    for _ in tqdm(range(frames), desc="pushes (every variant in turn)"):
        for key, gen in gens.items():
            t0 = time.perf_counter()
            gen.push(frame, pose)
            times[key].append(time.perf_counter() - t0)
    return times, outs


def markdown_table(headers: list[str], rows: list[list]) -> str:
    """A markdown table of already formatted cells."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    return "\n".join(lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows])

