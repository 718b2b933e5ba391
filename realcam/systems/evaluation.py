"""Evaluation shared by every system: metrics with the source-copy floor, reports, side-by-side videos, and
the videos ``realcam predict`` writes."""
from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any

import numpy as np
from lightning.pytorch.callbacks import Callback
from torch import Tensor, nn

from realcam import metrics
from realcam.atomic import write_atomic
from realcam.eval.accuracy import CameraAccuracy, score_video, unavailable
from realcam.eval.fidelity import FidelityScores


def safe_name(raw: Any, fallback: str) -> str:
    """A shard key as a file name: keys come from shards, so nothing that could act as a path survives."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", str(raw)).strip(".") or fallback


class VideoEvaluator(nn.Module):
    """Accumulates :class:`realcam.metrics.VideoMetrics` over generated batches and saves sample videos; with
    ``camera=True`` (the test stage) also :class:`realcam.eval.accuracy.CameraAccuracy`."""

    def __init__(self, lpips_backbone_weights: str | None = None, fps: float = 8.0):
        super().__init__()
        self.metrics = metrics.VideoMetrics(lpips_backbone_weights=lpips_backbone_weights)
        self.camera = CameraAccuracy()
        self.fps = fps
        self.videos_saved = 0

    def reset(self) -> None:
        self.metrics.reset()
        self.camera.reset()
        self.videos_saved = 0

    def update(self, generated: Tensor, batch: dict, camera: bool = False) -> None:
        self.metrics.update(generated.float(), batch["target"].float(), batch["source"].float(),
                            revisit=batch.get("revisit"))
        if camera:
            self.camera.update(generated.float(), batch["target_c2w"], batch["target_K"], batch["target"].float(),
                               batch["source"].float())

    def compute(self) -> dict:
        return {**self.metrics.compute(), **(self.camera.compute() if self.camera.update_called else {})}

    scalars = staticmethod(metrics.scalars)
    write_report = staticmethod(metrics.write_report)

    def save_videos(self, folder: Path, generated: Tensor, batch: dict, limit: int) -> list[Path]:
        """source | generated | ground truth mp4s, up to ``limit`` per evaluation."""
        paths = []
        for b in range(generated.shape[0]):
            if self.videos_saved >= limit:
                break
            name = safe_name(batch.get("key", [f"video{b}"] * generated.shape[0])[b], f"video{b}")
            paths.append(metrics.save_side_by_side(Path(folder) / f"{name}.mp4", batch["source"][b],
                                                   generated[b], batch["target"][b], fps=self.fps))
            self.videos_saved += 1
        return paths


def log_videos(loggers, tag: str, paths: list[Path], step: int, fps: float) -> int:
    """Send the side-by-side mp4s to every TensorBoard logger as animated GIF images (what TensorBoard's
    ``add_video`` writes, without its moviepy dependency); other loggers keep the mp4 files. Returns how many
    (logger, video) pairs were written."""
    from lightning.pytorch.loggers import TensorBoardLogger

    boards = [lg for lg in loggers if isinstance(lg, TensorBoardLogger)]
    if not boards:
        return 0
    from PIL import Image
    from tensorboard.compat.proto.summary_pb2 import Summary

    from realcam.data.video import read_video

    written = 0
    for path in paths:
        frames = np.asarray(read_video(path))           # uint8 [T, H, W, 3]
        images = [Image.fromarray(f) for f in frames]
        buf = io.BytesIO()
        images[0].save(buf, format="GIF", save_all=True, append_images=images[1:],
                       duration=max(1, round(1000 / fps)), loop=0)
        image = Summary.Image(height=frames.shape[1], width=frames.shape[2], colorspace=3,
                              encoded_image_string=buf.getvalue())
        summary = Summary(value=[Summary.Value(tag=f"{tag}/{Path(path).stem}", image=image)])
        for board in boards:
            # SummaryWriter.add_video does exactly this, once moviepy has made the GIF
            board.experiment._get_file_writer().add_summary(summary, step)
            written += 1
    return written


class EvaluatesVideos:
    """Validation / test hooks for a LightningModule that generates target videos.

    The module provides ``generate(batch) -> [B, T, 3, H, W]`` in [-1, 1], ``self.evaluator`` (a
    :class:`VideoEvaluator`), hparams ``eval_videos`` / ``save_videos``, and ``report_meta() -> dict`` (what the
    JSON report records about the sampler). Validation scores the first ``eval_videos`` videos; test scores all.
    """

    def _evaluate(self, batch: dict, stage: str) -> None:
        generated = self.generate(batch)
        self.evaluator.update(generated, batch, camera=stage == "test")
        if self.evaluator.videos_saved < self.hparams.save_videos and self.trainer.log_dir:
            out = Path(self.trainer.log_dir) / "videos" / f"{stage}_step{self.trained_steps:07d}"
            paths = self.evaluator.save_videos(out, generated, batch, self.hparams.save_videos)
            if self.trainer.is_global_zero and not self.trainer.sanity_checking:
                log_videos(self.loggers, f"{stage}/side_by_side", paths, self.trained_steps, self.evaluator.fps)

    @property
    def trained_steps(self) -> int:
        """The global step of the weights being evaluated: the loaded checkpoint's in validate / test / predict
        (Lightning counts from 0 there), the current one in fit."""
        return max(self.global_step, getattr(self, "_loaded_global_step", 0))

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        super().on_load_checkpoint(checkpoint)
        self._loaded_global_step = int(checkpoint.get("global_step", 0))

    def run_info(self) -> dict:
        """What every report records about the weights: the checkpoint path (None: the weights in memory, e.g.
        during fit) and their global step."""
        ckpt = getattr(self.trainer, "ckpt_path", None)
        return {"checkpoint": str(Path(ckpt).resolve()) if ckpt else None, "global_step": self.trained_steps}

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        if batch_idx * batch["source"].shape[0] < self.hparams.eval_videos:
            self._evaluate(batch, "val")

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def predict_step(self, batch: dict, batch_idx: int) -> dict:
        """The generated videos [B, T, 3, H, W] in [-1, 1]; :class:`PredictionWriter` writes them out."""
        return {"generated": self.generate(batch), "meta": self.report_meta()}

    def on_validation_epoch_start(self) -> None:
        self.evaluator.reset()

    def on_test_epoch_start(self) -> None:
        self.evaluator.reset()

    def on_validation_epoch_end(self) -> None:
        # `realcam validate` writes a report like test does; validation inside fit only logs
        self._log_eval("val", report=self.trainer.state.fn == "validate")

    def on_test_epoch_end(self) -> None:
        self._log_eval("test", report=True)

    def report_meta(self) -> dict:
        return {}

    def _log_eval(self, stage: str, report: bool) -> None:
        results = self.evaluator.compute()
        self.log_dict({f"{stage}/{k}": v for k, v in self.evaluator.scalars(results).items()}, sync_dist=False)
        if report and self.trainer.log_dir and self.trainer.is_global_zero:
            path = Path(self.trainer.log_dir) / f"{stage}_report.json"
            self.evaluator.write_report(path, results, {"stage": stage, **self.run_info(), **self.report_meta()})


class PredictionWriter(Callback):
    """Writes what ``realcam predict`` generates, batch by batch, so memory stays flat however many videos.

    For each sample, under ``output_dir`` (default ``<log dir>/predictions``): ``<key>.mp4``, the generated
    video; ``<key>_sbs.mp4``, source | generated | ground truth (``side_by_side``); ``<key>.npy``, the generated
    frames as uint8 [T, H, W, 3] (``save_frames``, lossless, for your own metrics). ``index.json`` lists every
    video with its PSNR against the ground truth and the source-copy PSNR (``index.rank<r>.json`` per rank under
    DDP) and, with ``camera_metrics``, its camera accuracy (RotErr, TransErr, CamMC of the generated video against
    the target path, docs/metrics.md) or why there is none. The summary adds FID and FVD against the ground truth
    when ``fid_inception_weights`` / ``fvd_i3d_weights`` name local files (else why not). ``realcam predict`` adds
    one with the defaults when the config names none.
    """

    def __init__(self, output_dir: str | None = None, side_by_side: bool = True, save_frames: bool = False,
                 fps: float = 8.0, camera_metrics: bool = True, fid_inception_weights: str | None = None,
                 fvd_i3d_weights: str | None = None):
        super().__init__()
        if not fps > 0:
            raise ValueError(f"PredictionWriter fps={fps}: must be > 0")
        self.output_dir, self.side_by_side, self.save_frames, self.fps = output_dir, side_by_side, save_frames, fps
        self.camera_metrics = camera_metrics
        self._camera: CameraAccuracy | None = None
        self.fidelity = FidelityScores(fid_inception_weights, fvd_i3d_weights)
        self.rows: list[dict] = []
        self.meta: dict = {}
        self._names: set[str] = set()

    def folder(self, trainer) -> Path:
        if self.output_dir is not None:
            return Path(self.output_dir)
        return Path(trainer.log_dir or trainer.default_root_dir) / "predictions"

    def on_predict_epoch_start(self, trainer, pl_module) -> None:
        self.rows, self.meta, self._names = [], {}, set()
        self.fidelity.reset()

    def _unique(self, name: str) -> str:
        """A file stem no earlier video used: the same key in two shards keeps both videos, and a key ending in
        ``_sbs`` cannot overwrite another video's side by side."""
        out, n = name, 1
        while out in self._names or f"{out}_sbs" in self._names:
            n += 1
            out = f"{name}-{n}"
        self._names |= {out, f"{out}_sbs"}
        return out

    def on_predict_batch_end(self, trainer, pl_module, prediction, batch, batch_idx, dataloader_idx=0) -> None:
        from realcam.data.video import write_video

        generated = prediction["generated"].detach().float().cpu()
        self.meta = prediction.get("meta") or self.meta
        source, target = batch["source"].detach().float().cpu(), batch["target"].detach().float().cpu()
        self.fidelity.update(generated, target)
        folder = self.folder(trainer)
        folder.mkdir(parents=True, exist_ok=True)
        for b in range(generated.shape[0]):
            key = batch["key"][b] if "key" in batch else f"batch{batch_idx:05d}-{b}"
            name = self._unique(safe_name(key, f"batch{batch_idx:05d}-{b}"))
            frames = metrics.to_uint8_frames(generated[b], "generated")
            files = {"video": write_video(folder / f"{name}.mp4", frames, fps=self.fps).name}
            if self.side_by_side:
                files["side_by_side"] = metrics.save_side_by_side(folder / f"{name}_sbs.mp4", source[b],
                                                                  generated[b], target[b], fps=self.fps).name
            if self.save_frames:
                buf = io.BytesIO()
                np.save(buf, frames.numpy())
                files["frames"] = write_atomic(folder / f"{name}.npy", buf.getvalue()).name
            unit = metrics.to_unit
            self.rows.append({
                "key": str(key), "name": name,
                **{k: str(batch[k][b]) for k in ("scene_id", "strategy") if k in batch},
                "frames": int(generated.shape[1]), "height": int(generated.shape[3]),
                "width": int(generated.shape[4]),
                "psnr": float(metrics.frame_psnr(unit(generated[b]), unit(target[b])).mean()),
                "source_copy_psnr": float(metrics.frame_psnr(unit(source[b]), unit(target[b])).mean()),
                **self._camera_scores(generated[b], batch, b),
                "files": files,
            })

    def _camera_scores(self, generated: Tensor, batch: dict, b: int) -> dict:
        """{"camera": {RotErr, TransErr, CamMC, ...}} for one video [T, 3, H, W], or {"camera_unavailable": why}."""
        if not self.camera_metrics:
            return {}
        self._camera = self._camera or CameraAccuracy()
        hw = tuple(generated.shape[-2:])
        if min(hw) < self._camera.min_size:
            return {"camera_unavailable": unavailable(self._camera.min_size, hw)}
        K, c2w = batch["target_K"][b, 0].detach().double().cpu(), batch["target_c2w"][b].detach().double().cpu()
        return {"camera": score_video(self._camera.estimator, generated, K, c2w)}

    def on_predict_epoch_end(self, trainer, pl_module) -> None:
        if not self.rows:
            return
        name = "index.json" if trainer.world_size == 1 else f"index.rank{trainer.global_rank}.json"
        summary = {"videos": len(self.rows),
                   "psnr": float(np.mean([r["psnr"] for r in self.rows])),
                   "source_copy_psnr": float(np.mean([r["source_copy_psnr"] for r in self.rows]))}
        scored = [r["camera"] for r in self.rows if "camera" in r]
        if scored:
            summary.update({f"camera_{k}": float(np.mean([c[k] for c in scored])) for k in scored[0]})
        elif self.camera_metrics:
            summary["camera_unavailable"] = self.rows[0].get("camera_unavailable")
        summary.update(self.fidelity.compute())
        metrics.write_report(self.folder(trainer) / name, summary,
                             {"stage": "predict", **_run_info(pl_module), "fps": self.fps,
                              **self.meta, "videos": self.rows})



def _run_info(module) -> dict:
    if hasattr(module, "run_info"):
        return module.run_info()
    try:
        ckpt = module.trainer.ckpt_path
    except (AttributeError, RuntimeError):      # not attached to a Trainer (a module driven by hand)
        ckpt = None
    return {"checkpoint": str(Path(ckpt).resolve()) if ckpt else None, "global_step": module.global_step}
