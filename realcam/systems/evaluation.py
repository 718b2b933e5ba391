"""Evaluation shared by every system: metrics with the source-copy floor, reports, side-by-side videos."""
from __future__ import annotations

import re
from pathlib import Path

from torch import Tensor, nn

from realcam import metrics


class VideoEvaluator(nn.Module):
    """Accumulates :class:`realcam.metrics.VideoMetrics` over generated batches and saves sample videos."""

    def __init__(self, lpips_backbone_weights: str | None = None, fps: float = 8.0):
        super().__init__()
        self.metrics = metrics.VideoMetrics(lpips_backbone_weights=lpips_backbone_weights)
        self.fps = fps
        self.videos_saved = 0

    def reset(self) -> None:
        self.metrics.reset()
        self.videos_saved = 0

    def update(self, generated: Tensor, batch: dict) -> None:
        self.metrics.update(generated.float(), batch["target"].float(), batch["source"].float(),
                            revisit=batch.get("revisit"))

    def compute(self) -> dict:
        return self.metrics.compute()

    scalars = staticmethod(metrics.scalars)
    write_report = staticmethod(metrics.write_report)

    def save_videos(self, folder: Path, generated: Tensor, batch: dict, limit: int) -> list[Path]:
        """source | generated | ground truth mp4s, up to ``limit`` per evaluation."""
        paths = []
        for b in range(generated.shape[0]):
            if self.videos_saved >= limit:
                break
            raw = str(batch.get("key", [f"video{b}"] * generated.shape[0])[b])
            name = re.sub(r"[^A-Za-z0-9_.-]+", "_", raw) or f"video{b}"   # keys come from shards: no paths
            paths.append(metrics.save_side_by_side(Path(folder) / f"{name}.mp4", batch["source"][b],
                                                   generated[b], batch["target"][b], fps=self.fps))
            self.videos_saved += 1
        return paths
