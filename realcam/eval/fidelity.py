"""FID and FVD from local weights only: nothing is downloaded, and without a weights file the score is
``None`` with a reason naming the option that supplies one (docs/metrics.md).

- FID: torch-fidelity's InceptionV3 (the TF FID graph ported to PyTorch, so numbers are comparable with published
  FID), 2048-d pool features of every generated and every ground-truth frame; weights from a local
  ``pt_inception-2015-12-05-6726825d.pth``.
- FVD: the TorchScript I3D of StyleGAN-V / fvd-comparison (``i3d_torchscript.pt``), its 400-d features of every
  video resized to 224x224 in [-1, 1], called with ``rescale=False, resize=False, return_features=True``.

Both use the Fréchet distance ``||mu_a - mu_b||^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2))`` of feature moments.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

FID_OPTION = "fid_inception_weights"
FVD_OPTION = "fvd_i3d_weights"
NO_FID = (f"unavailable: no local Inception weights: pass {FID_OPTION}=PATH (torch-fidelity's "
          f"pt_inception-2015-12-05-6726825d.pth); nothing is downloaded")
NO_FVD = (f"unavailable: no local I3D weights: pass {FVD_OPTION}=PATH (the TorchScript i3d_torchscript.pt of "
          f"StyleGAN-V); nothing is downloaded")
I3D_SIZE = 224


def frechet_distance(mu_a: Tensor, cov_a: Tensor, mu_b: Tensor, cov_b: Tensor) -> float:
    """Fréchet distance between two Gaussians. ``tr((S_a S_b)^(1/2))`` is the sum of the square roots of the
    eigenvalues of ``S_a S_b`` (real and >= 0 for covariance matrices; tiny negative round-off is clipped)."""
    mu_a, cov_a, mu_b, cov_b = (x.double() for x in (mu_a, cov_a, mu_b, cov_b))
    eig = torch.linalg.eigvals(cov_a @ cov_b).real.clamp_min(0)
    return float((mu_a - mu_b).square().sum() + cov_a.trace() + cov_b.trace() - 2 * eig.sqrt().sum())


class Moments:
    """Running mean and covariance of feature vectors ``[N, D]`` (float64 sums)."""

    def __init__(self) -> None:
        self.n, self.sum, self.outer = 0, None, None

    def add(self, features: Tensor) -> None:
        f = features.detach().double().flatten(1).cpu()
        self.sum = f.sum(0) if self.sum is None else self.sum + f.sum(0)
        self.outer = f.T @ f if self.outer is None else self.outer + f.T @ f
        self.n += len(f)

    def stats(self) -> tuple[Tensor, Tensor]:
        if self.n < 2:
            raise ValueError(f"{self.n} feature vector(s): a covariance needs at least 2 frames or videos")
        mu = self.sum / self.n
        return mu, (self.outer - self.n * torch.outer(mu, mu)) / (self.n - 1)


def _local_file(path: str | os.PathLike | None, none_reason: str) -> tuple[Path | None, str | None]:
    if path is None:
        return None, none_reason
    path = Path(path).expanduser()
    if not path.is_file():
        return None, f"{none_reason.split(':')[0]}: {path} does not exist; " + none_reason.split(": ", 1)[1]
    return path, None


def build_inception(weights: str | os.PathLike | None) -> tuple[nn.Module | None, str | None]:
    """``(torch-fidelity InceptionV3 with 2048-d features, None)`` from a local file, or ``(None, reason)``."""
    path, reason = _local_file(weights, NO_FID)
    if path is None:
        return None, reason
    try:
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
    except ImportError as err:
        return None, f"unavailable: FID needs torch-fidelity ({err}): pip install 'torch-fidelity>=0.3,<0.4'"
    state = torch.load(path, map_location="cpu", weights_only=True)   # tensors only; raises on anything else
    if not isinstance(state, dict) or "fc.weight" not in state:
        raise ValueError(f"{FID_OPTION} {path} is not an InceptionV3 state_dict of torch-fidelity's layout (no "
                         f"'fc.weight'): use pt_inception-2015-12-05-6726825d.pth")
    # torch-fidelity re-reads the file with weights_only=False; the weights_only=True load above vetted it first
    return FeatureExtractorInceptionV3("inception-v3-compat", ["2048"], feature_extractor_weights_path=str(path)), None


def build_i3d(weights: str | os.PathLike | None) -> tuple[Any | None, str | None]:
    """``(TorchScript I3D, None)`` from a local file, or ``(None, reason)``. TorchScript runs its own graph,
    no Python pickle."""
    path, reason = _local_file(weights, NO_FVD)
    if path is None:
        return None, reason
    return torch.jit.load(str(path), map_location="cpu").eval(), None


class FidelityScores:
    """FID over frames and FVD over videos between generated and ground-truth videos ``[B, T, 3, H, W]`` in
    [-1, 1]; each is ``None`` with a ``*_unavailable`` reason when its weights are not given."""

    def __init__(self, fid_inception_weights: str | None = None, fvd_i3d_weights: str | None = None,
                 chunk: int = 16):
        self.inception, self.fid_unavailable = build_inception(fid_inception_weights)
        self.i3d, self.fvd_unavailable = build_i3d(fvd_i3d_weights)
        self.chunk = chunk
        self.reset()

    def reset(self) -> None:
        self.moments = {"fid_generated": Moments(), "fid_real": Moments(), "fvd_generated": Moments(),
                        "fvd_real": Moments()}

    @torch.no_grad()
    def update(self, generated: Tensor, ground_truth: Tensor) -> None:
        for kind, video in (("generated", generated), ("real", ground_truth)):
            video = video.detach().float().cpu()
            if self.inception is not None:
                u8 = ((video.flatten(0, 1).clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
                for part in u8.split(self.chunk):
                    self.moments[f"fid_{kind}"].add(self.inception(part)[0])
            if self.i3d is not None:
                self.moments[f"fvd_{kind}"].add(self._i3d_features(video))

    def _i3d_features(self, video: Tensor) -> Tensor:
        """[B, T, 3, H, W] in [-1, 1] -> [B, 400]: frames resized to 224x224, laid out [B, 3, T, 224, 224]."""
        B, T = video.shape[:2]
        x = nn.functional.interpolate(video.flatten(0, 1).clamp(-1, 1), size=(I3D_SIZE, I3D_SIZE), mode="bilinear",
                                      align_corners=False)
        x = x.reshape(B, T, 3, I3D_SIZE, I3D_SIZE).permute(0, 2, 1, 3, 4).contiguous()
        return self.i3d(x, rescale=False, resize=False, return_features=True)

    def compute(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, reason in (("fid", self.fid_unavailable), ("fvd", self.fvd_unavailable)):
            if reason is not None:
                out.update({name: None, f"{name}_unavailable": reason})
                continue
            gen, real = self.moments[f"{name}_generated"], self.moments[f"{name}_real"]
            out[f"{name}_samples"] = gen.n
            if gen.n < 2:
                what = "frames" if name == "fid" else "videos"
                out.update({name: None, f"{name}_unavailable": f"unavailable: {gen.n} {what}; a covariance needs 2"})
                continue
            out[name] = frechet_distance(*gen.stats(), *real.stats())
        return out
