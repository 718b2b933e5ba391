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


class EvaluatesVideos:
    """Validation / test hooks for a LightningModule that generates target videos.

    The module provides ``generate(batch) -> [B, T, 3, H, W]`` in [-1, 1], ``self.evaluator`` (a
    :class:`VideoEvaluator`), hparams ``eval_videos`` / ``save_videos``, and ``report_meta() -> dict`` (what the
    JSON report records about the sampler). Validation scores the first ``eval_videos`` videos; test scores all.
    """

    def _evaluate(self, batch: dict, stage: str) -> None:
        generated = self.generate(batch)
        self.evaluator.update(generated, batch)
        if self.evaluator.videos_saved < self.hparams.save_videos and self.trainer.log_dir:
            out = Path(self.trainer.log_dir) / "videos" / f"{stage}_step{self.global_step:07d}"
            self.evaluator.save_videos(out, generated, batch, self.hparams.save_videos)

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        if batch_idx * batch["source"].shape[0] < self.hparams.eval_videos:
            self._evaluate(batch, "val")

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def on_validation_epoch_start(self) -> None:
        self.evaluator.reset()

    def on_test_epoch_start(self) -> None:
        self.evaluator.reset()

    def on_validation_epoch_end(self) -> None:
        self._log_eval("val", report=False)

    def on_test_epoch_end(self) -> None:
        self._log_eval("test", report=True)

    def report_meta(self) -> dict:
        return {}

    def _log_eval(self, stage: str, report: bool) -> None:
        results = self.evaluator.compute()
        self.log_dict({f"{stage}/{k}": v for k, v in self.evaluator.scalars(results).items()}, sync_dist=False)
        if report and self.trainer.log_dir and self.trainer.is_global_zero:
            path = Path(self.trainer.log_dir) / f"{stage}_report.json"
            self.evaluator.write_report(path, results, {"stage": stage, "global_step": self.global_step,
                                                        **self.report_meta()})
