"""Evaluation metrics for generated target videos, a JSON report writer and side-by-side sample videos.

``VideoMetrics`` is one ``torchmetrics.Metric`` whose states are plain sums (``dist_reduce_fx="sum"``), so it
syncs across DDP ranks and accepts a different T in every batch. Every score is also computed for the
source-copy baseline (output = source frame), which is the floor a model has to beat. Formulas, units and the
offline LPIPS set-up: docs/metrics.md.
"""
from __future__ import annotations

import json
import math
import os
import platform
import warnings
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from torch import Tensor, nn
from torchmetrics import Metric
from torchmetrics.functional.image import structural_similarity_index_measure

from realcam.atomic import write_atomic
from realcam.data.video import side_by_side, write_video

BASELINE = "baseline/source_copy/"
NO_LPIPS_WEIGHTS = ("no local backbone weights: pass --lpips_backbone_weights PATH "
                    "(torchvision {model} state_dict)")
TORCHVISION_NAME = {"alex": "alexnet", "vgg": "vgg16", "squeeze": "squeezenet1_1"}   # lpips net -> torchvision
SSIM_MIN_SIZE = 11      # the 11x11 Gaussian window (sigma 1.5) needs at least one fully-inside pixel
LPIPS_MIN_SIZE = 32     # AlexNet's stride-4 conv and two 3x3/2 max-pools leave nothing below ~31 px


# ---------------------------------------------------------------- per-frame scores (inputs in [0, 1])

def to_unit(x: Tensor) -> Tensor:
    """[-1, 1] -> [0, 1] float32, clamped: scores see exactly what a saved video would show."""
    return ((x.float().clamp(-1.0, 1.0) + 1.0) * 0.5)


def frame_psnr(a: Tensor, b: Tensor, cap: float = 100.0) -> Tensor:
    """[N, 3, H, W] in [0, 1] -> [N] dB, 10 log10(1 / mse) (= 10 log10(4 / mse) on [-1, 1]), capped at ``cap``.

    Identical frames have infinite PSNR; the cap keeps means and JSON finite.
    """
    mse = (a.double() - b.double()).square().flatten(1).mean(1)
    psnr = 10.0 * torch.log10(1.0 / mse.clamp_min(1e-30))
    return torch.where(mse > 0, psnr, torch.full_like(psnr, cap)).clamp(max=cap)


def frame_ssim(a: Tensor, b: Tensor) -> Tensor:
    """[N, 3, H, W] in [0, 1] -> [N] SSIM (Gaussian window 11, sigma 1.5, data range 1, k1 0.01, k2 0.03)."""
    if a.shape[0] == 0:
        return a.new_zeros(0, dtype=torch.float64)
    return structural_similarity_index_measure(a.float(), b.float(), data_range=1.0, reduction="none").double()


def pair_flicker(x: Tensor) -> Tensor:
    """[B, T, 3, H, W] in [0, 1] -> [B, T-1]: mean |x[t+1] - x[t]| over channels and pixels."""
    return (x[:, 1:] - x[:, :-1]).abs().flatten(2).mean(2).double()


# ---------------------------------------------------------------- LPIPS from local weights only

def build_lpips(backbone_weights: str | os.PathLike | None, net: str = "alex",
                version: str = "0.1") -> tuple[nn.Module | None, str | None]:
    """``(lpips.LPIPS, None)`` built without network access, or ``(None, reason)`` when it cannot be.

    The trunk is built randomly initialised (``pnet_rand=True``: torchvision would otherwise download ImageNet
    weights) and then overwritten from ``backbone_weights``, a local torchvision state_dict of the whole model
    (``features.N.weight``) or of its ``.features`` (``N.weight``). The calibrated linear heads ship inside the
    lpips package and are loaded from there. A file that exists but does not fit raises.
    """
    tv_name = TORCHVISION_NAME.get(net, net)
    if backbone_weights is None:
        return None, NO_LPIPS_WEIGHTS.format(model=tv_name)
    path = Path(backbone_weights).expanduser()
    if not path.is_file():
        return None, f"lpips backbone weights {path} do not exist; " + NO_LPIPS_WEIGHTS.format(model=tv_name)
    try:
        import lpips
    except ImportError as e:
        return None, f"the lpips package is not installed ({e}): pip install lpips"
    heads = Path(lpips.__file__).parent / "weights" / f"v{version}" / f"{net}.pth"
    if not heads.is_file():
        raise ValueError(f"lpips net={net!r} version={version!r}: the package ships no linear weights at {heads}; "
                         f"use net='alex', 'vgg' or 'squeeze'")
    with warnings.catch_warnings():     # torchvision's 'pretrained' deprecation notice; pretrained=False here
        warnings.simplefilter("ignore", UserWarning)
        model = lpips.LPIPS(net=net, version=version, pretrained=False, pnet_rand=True, verbose=False)
    model.lins.load_state_dict(_strip(torch.load(heads, map_location="cpu", weights_only=True)), strict=True)
    model.net.load_state_dict(_trunk_state(torch.load(path, map_location="cpu", weights_only=True),
                                           model.net.state_dict(), path, net), strict=True)
    model.eval().requires_grad_(False)
    return model, None


def _strip(heads: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Package keys 'lin0.model.1.weight' -> ModuleList keys '0.model.1.weight'."""
    return {k[3:]: v for k, v in heads.items() if k.startswith("lin")}


def _trunk_state(loaded: Any, wanted: Mapping[str, Tensor], path: Path, net: str) -> dict[str, Tensor]:
    """Map a torchvision state_dict onto lpips' slices: 'sliceK.N.weight' <- 'features.N.weight' or 'N.weight'."""
    tv_name = TORCHVISION_NAME.get(net, net)
    if not isinstance(loaded, Mapping):
        raise ValueError(f"lpips_backbone_weights {path} holds a {type(loaded).__name__}: expected a state_dict "
                         f"(torch.save(torchvision.models.{tv_name}().state_dict(), path) or its .features)")
    out, missing = {}, []
    for key in wanted:
        layer = key.split(".", 1)[1]                     # lpips keeps torchvision's feature index as the name
        for candidate in (f"features.{layer}", layer, key):
            if candidate in loaded:
                out[key] = loaded[candidate]
                break
        else:
            missing.append(f"features.{layer}")
    if missing:
        raise ValueError(f"lpips_backbone_weights {path} lacks {len(missing)} backbone tensors (e.g. {missing[0]!r}): "
                         f"expected a torchvision {tv_name} state_dict with keys 'features.N.weight' or its .features")
    return out


# ---------------------------------------------------------------- the metric

class VideoMetrics(Metric):
    """PSNR, SSIM, LPIPS, loop closure and flicker of generated target videos, plus the source-copy floor.

    ``update(generated, ground_truth, source, revisit=None, valid=None)`` with videos ``[B, T, 3, H, W]`` in
    [-1, 1]; ``compute(prefix="")`` returns a flat dict (see docs/metrics.md for every key). Undefined numbers
    (no revisit pair yet, LPIPS without weights) are ``None``. The LPIPS network is kept out of the module tree,
    so it never enters a checkpoint: a run with weights and one without load each other's checkpoints.
    """

    is_differentiable = False
    higher_is_better = None
    full_state_update = False

    def __init__(self, lpips_backbone_weights: str | None = None, lpips_net: str = "alex",
                 psnr_cap: float = 100.0, lpips_chunk: int = 32, **kwargs: Any):
        kwargs.setdefault("compute_with_cache", False)    # compute(prefix) must not return a stale prefix
        super().__init__(**kwargs)
        if not psnr_cap > 0:
            raise ValueError(f"psnr_cap={psnr_cap} must be > 0 dB")
        self.psnr_cap, self.lpips_chunk = float(psnr_cap), int(lpips_chunk)
        net, self.lpips_unavailable = build_lpips(lpips_backbone_weights, lpips_net)
        self._lpips_box = (net,)                          # a tuple hides it from nn.Module registration
        sums = ["psnr", "ssim", "lpips", "loop_psnr", "loop_ssim", "loop_gt_psnr", "loop_gt_ssim",
                "flicker", "flicker_gt", "base_psnr", "base_ssim", "base_lpips", "base_loop_psnr",
                "base_loop_ssim", "base_flicker", "frames", "loop_pairs", "flicker_pairs"]
        for name in sums:
            self.add_state(name, torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    @property
    def lpips_available(self) -> bool:
        return self._lpips_box[0] is not None

    def update(self, generated: Tensor, ground_truth: Tensor, source: Tensor, revisit: Tensor | None = None,
               valid: Tensor | None = None) -> None:
        """Videos [B, T, 3, H, W] in [-1, 1]; revisit [B, T] long (m < n, or -1); valid bool [B, T] or lengths [B]."""
        # scores must not depend on the caller's precision plugin: bf16 autocast would change SSIM and LPIPS
        with torch.autocast(generated.device.type, enabled=False):
            self._update(generated, ground_truth, source, revisit, valid)

    def _update(self, generated: Tensor, ground_truth: Tensor, source: Tensor, revisit: Tensor | None,
                valid: Tensor | None) -> None:
        B, T = _check_videos(generated=generated, ground_truth=ground_truth, source=source)
        mask = _valid_mask(valid, B, T, generated.device)
        gen, gt, src = to_unit(generated), to_unit(ground_truth), to_unit(source)

        n = int(mask.sum())
        self.frames += n
        g, y, s = gen[mask], gt[mask], src[mask]
        self.psnr += frame_psnr(g, y, self.psnr_cap).sum()
        self.ssim += frame_ssim(g, y).sum()
        self.base_psnr += frame_psnr(s, y, self.psnr_cap).sum()
        self.base_ssim += frame_ssim(s, y).sum()
        if self.lpips_available and n:
            self.lpips += self._lpips(g, y).sum()
            self.base_lpips += self._lpips(s, y).sum()

        pairs = mask[:, 1:] & mask[:, :-1]
        self.flicker_pairs += int(pairs.sum())
        self.flicker += pair_flicker(gen)[pairs].sum()
        self.flicker_gt += pair_flicker(gt)[pairs].sum()
        self.base_flicker += pair_flicker(src)[pairs].sum()

        if revisit is None:
            return
        earlier, loop = _revisit_index(revisit, mask)
        rows = torch.arange(B, device=gen.device)[:, None].expand(B, T)[loop]
        self.loop_pairs += int(loop.sum())
        for x, psnr, ssim in ((gen, "loop_psnr", "loop_ssim"), (gt, "loop_gt_psnr", "loop_gt_ssim"),
                              (src, "base_loop_psnr", "base_loop_ssim")):
            now, before = x[loop], x[rows, earlier[loop]]             # frame n and the frame m it revisits
            setattr(self, psnr, getattr(self, psnr) + frame_psnr(now, before, self.psnr_cap).sum())
            setattr(self, ssim, getattr(self, ssim) + frame_ssim(now, before).sum())

    def compute(self, prefix: str = "") -> dict[str, float | int | str | None]:
        frames, loops, pairs = int(self.frames), int(self.loop_pairs), int(self.flicker_pairs)

        def mean(total: Tensor, count: int) -> float | None:
            return float(total / count) if count else None

        def diff(a: float | None, b: float | None) -> float | None:
            return None if a is None or b is None else a - b

        lpips_on = self.lpips_available
        out: dict[str, float | int | str | None] = {
            "psnr": mean(self.psnr, frames), "ssim": mean(self.ssim, frames),
            "lpips": mean(self.lpips, frames) if lpips_on else None,
            "loop_psnr": mean(self.loop_psnr, loops), "loop_ssim": mean(self.loop_ssim, loops),
            "loop_gt_psnr": mean(self.loop_gt_psnr, loops), "loop_gt_ssim": mean(self.loop_gt_ssim, loops),
            "flicker": mean(self.flicker, pairs), "flicker_gt": mean(self.flicker_gt, pairs),
        }
        out["flicker_diff"] = diff(out["flicker"], out["flicker_gt"])
        base = {
            "psnr": mean(self.base_psnr, frames), "ssim": mean(self.base_ssim, frames),
            "lpips": mean(self.base_lpips, frames) if lpips_on else None,
            "loop_psnr": mean(self.base_loop_psnr, loops), "loop_ssim": mean(self.base_loop_ssim, loops),
            "flicker": mean(self.base_flicker, pairs),
        }
        base["flicker_diff"] = diff(base["flicker"], out["flicker_gt"])
        out.update({BASELINE + k: v for k, v in base.items()})
        out.update(num_frames=frames, num_loop_pairs=loops, num_flicker_pairs=pairs)
        if not lpips_on:
            out["lpips_unavailable"] = self.lpips_unavailable
        return {prefix + k: v for k, v in out.items()}

    def _lpips(self, a: Tensor, b: Tensor) -> Tensor:
        """[N, 3, H, W] in [0, 1] -> [N] LPIPS distance (the lpips net expects [-1, 1])."""
        net = self._lpips_box[0]
        if min(a.shape[-2:]) < LPIPS_MIN_SIZE:
            raise ValueError(f"LPIPS needs frames of at least {LPIPS_MIN_SIZE}x{LPIPS_MIN_SIZE} px, got "
                             f"{tuple(a.shape[-2:])}: evaluate at a larger size or drop lpips_backbone_weights")
        if next(net.parameters()).device != a.device:     # not a registered child, so .to() did not move it
            net.to(a.device)
        out = [net(x * 2 - 1, y * 2 - 1).flatten().double()
               for x, y in zip(a.split(self.lpips_chunk), b.split(self.lpips_chunk))]
        return torch.cat(out)


def scalars(results: Mapping[str, Any]) -> dict[str, float]:
    """The numeric entries of ``compute()`` (drops None and reason strings), ready for ``self.log_dict``."""
    return {k: float(v) for k, v in results.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def _check_videos(**videos: Tensor) -> tuple[int, int]:
    shape = None
    for name, x in videos.items():
        if not torch.is_tensor(x) or x.ndim != 5 or x.shape[2] != 3:
            got = tuple(x.shape) if torch.is_tensor(x) else type(x).__name__
            raise ValueError(f"{name} is {got}: expected a video batch [B, T, 3, H, W] in [-1, 1]")
        if not x.is_floating_point():
            raise TypeError(f"{name} has dtype {x.dtype}: expected float in [-1, 1] (uint8 u -> u / 127.5 - 1)")
        if shape is not None and x.shape != shape:
            raise ValueError(f"{name} has shape {tuple(x.shape)} but generated has {tuple(shape)}: "
                             f"generated, ground_truth and source must match")
        shape = x.shape
    if min(shape[-2:]) < SSIM_MIN_SIZE:
        raise ValueError(f"frames are {tuple(shape[-2:])} px: SSIM's 11x11 window needs H, W >= {SSIM_MIN_SIZE}")
    return int(shape[0]), int(shape[1])


def _valid_mask(valid: Tensor | None, B: int, T: int, device: torch.device) -> Tensor:
    """bool [B, T] from a mask [B, T] or lengths [B]; None means every frame counts."""
    if valid is None:
        return torch.ones(B, T, dtype=torch.bool, device=device)
    valid = valid.to(device)
    if valid.dtype == torch.bool and valid.shape == (B, T):
        return valid
    if not valid.is_floating_point() and valid.shape == (B,):
        if bool(((valid < 0) | (valid > T)).any()):
            raise ValueError(f"valid lengths {valid.tolist()} must lie in [0, T={T}]")
        return torch.arange(T, device=device)[None] < valid[:, None]
    raise ValueError(f"valid is {valid.dtype} {tuple(valid.shape)}: expected a bool mask [B, T]=[{B}, {T}] "
                     f"or integer lengths [B]=[{B}]")


def _revisit_index(revisit: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """-> (earlier index [B, T] clamped to >= 0, bool [B, T] pairs whose frames n and m are both valid)."""
    B, T = mask.shape
    revisit = revisit.to(mask.device)
    if revisit.shape != (B, T) or revisit.is_floating_point() or revisit.dtype == torch.bool:
        raise ValueError(f"revisit is {revisit.dtype} {tuple(revisit.shape)}: expected long [B, T]=[{B}, {T}] "
                         f"holding m for a revisit n -> m and -1 elsewhere")
    n = torch.arange(T, device=mask.device)[None]
    bad = (revisit < -1) | (revisit >= n)
    if bool(bad.any()):
        b, t = (int(i) for i in bad.nonzero()[0])
        raise ValueError(f"revisit[{b}, {t}] = {int(revisit[b, t])}: a revisit must point to an earlier step "
                         f"0 <= m < {t}, or be -1")
    earlier = revisit.clamp_min(0).long()
    return earlier, (revisit >= 0) & mask & mask.gather(1, earlier)


# ---------------------------------------------------------------- report and sample videos

def write_report(path: str | os.PathLike, metrics: Mapping[str, Any], extra: Mapping[str, Any] | None = None) -> Path:
    """Write ``{"metrics", "extra", "created_utc", "versions"}`` as JSON, atomically (temp file + rename).

    Tensors and numpy values become numbers or lists; non-finite floats become ``null`` (strict JSON).
    """
    import realcam
    import torchmetrics

    payload = {
        "metrics": _jsonable(dict(metrics), "metrics"),
        "extra": _jsonable(dict(extra or {}), "extra"),
        "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "versions": {"realcam": realcam.__version__, "torch": torch.__version__,
                     "torchmetrics": torchmetrics.__version__, "python": platform.python_version()},
    }
    return write_atomic(path, json.dumps(payload, indent=2, allow_nan=False) + "\n")


def _jsonable(x: Any, where: str) -> Any:
    if isinstance(x, Mapping):
        return {str(k): _jsonable(v, f"{where}[{k!r}]") for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v, f"{where}[{i}]") for i, v in enumerate(x)]
    if torch.is_tensor(x) or isinstance(x, (np.ndarray, np.generic)):
        return _jsonable(x.tolist() if torch.is_tensor(x) else np.asarray(x).tolist(), where)
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if x is None or isinstance(x, (str, int, bool)):
        return x
    if isinstance(x, os.PathLike):
        return os.fspath(x)
    raise TypeError(f"{where} is a {type(x).__name__}, which JSON cannot hold: pass a number, string, list or dict")


def to_uint8_frames(video: Tensor, name: str = "video") -> Tensor:
    """[T, 3, H, W] in [-1, 1] -> uint8 [T, H, W, 3] (clamped, rounded)."""
    if not torch.is_tensor(video) or video.ndim != 4 or video.shape[1] != 3:
        got = tuple(video.shape) if torch.is_tensor(video) else type(video).__name__
        raise ValueError(f"{name} is {got}: expected one video [T, 3, H, W] in [-1, 1]")
    u = ((video.detach().float().clamp(-1.0, 1.0) + 1.0) * 127.5).round().to(torch.uint8)
    return u.permute(0, 2, 3, 1).contiguous().cpu()


def save_side_by_side(path: str | os.PathLike, source: Tensor, generated: Tensor, ground_truth: Tensor,
                      fps: float, gap: int = 2, crf: int = 18) -> Path:
    """Write an mp4 of source | generated | ground truth, each [T, 3, H, W] in [-1, 1].

    ``gap`` white pixel columns separate the panels (0 = none); the frame is [H, 3W + 2 gap].
    """
    videos = [to_uint8_frames(v, n) for v, n in ((source, "source"), (generated, "generated"),
                                                  (ground_truth, "ground_truth"))]
    if len({tuple(v.shape) for v in videos}) != 1:
        raise ValueError(f"source, generated and ground_truth have shapes {[tuple(v.shape) for v in videos]} "
                         f"(as [T, H, W, 3]): they must match")
    if gap < 0:
        raise ValueError(f"gap={gap} must be >= 0 pixels")
    return write_video(path, side_by_side(videos, gap=gap), fps=fps, crf=crf)
