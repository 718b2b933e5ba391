"""Camera accuracy in the test and predict reports: scored when frames are large enough, 'unavailable' below."""
import json
from types import SimpleNamespace

import pytest
import torch

from realcam import geometry
from realcam.data.synthetic import SyntheticSource
from realcam.eval.accuracy import CameraAccuracy
from realcam.systems.evaluation import PredictionWriter, VideoEvaluator

T, SIZE = 4, 128


def to_video(frames: torch.Tensor) -> torch.Tensor:
    """uint8 [T, H, W, 3] -> float [T, 3, H, W] in [-1, 1]."""
    return frames.permute(0, 3, 1, 2).float() / 127.5 - 1


@pytest.fixture(scope="module")
def batch():
    """One video of a frozen held-out scene: the target arcs left from the source camera, which stays put;
    'mirrored' is what a generator that arcs right instead would produce."""
    src = SyntheticSource(num_cameras=1, num_frames=T, height=SIZE, width=SIZE, seed=0, split="test")
    c2w, K, _ = src.cameras(1)
    base, K = c2w[0, 0], K[0, 0].expand(T, 3, 3)
    scene = src.scene(1)

    def render(spec: str) -> tuple[torch.Tensor, torch.Tensor]:
        world = base[None] @ geometry.parse_trajectory_spec(spec, T)
        return to_video(scene.render(world, K, torch.zeros(T), SIZE, SIZE)), world

    target, target_c2w = render("arc:left:20")
    source, source_c2w = render("static")
    return {"target": target[None], "source": source[None], "target_c2w": target_c2w[None],
            "source_c2w": source_c2w[None], "target_K": K[None].clone(), "key": ["scene1"],
            "mirrored": render("arc:right:20")[0][None]}


def test_a_perfect_generator_scores_the_estimators_floor_and_copying_the_source_scores_worse(batch):
    acc = CameraAccuracy(estimator_args={"max_features": 800})
    acc.update(batch["target"], batch["target_c2w"], batch["target_K"], batch["target"], batch["source"])
    out = acc.compute()
    assert out["camera_videos"] == 1 and "camera_unavailable" not in out
    assert out["camera_RotErr"] == out["camera_gt_RotErr"] and out["camera_rot_err_deg_mean"] < 1.5
    assert out["baseline/source_copy/camera_RotErr"] > 5 * out["camera_RotErr"]
    assert out["camera_matched_pixels"] == out["camera_gt_matched_pixels"] > 10
    assert "baseline/source_copy/camera_matched_pixels" not in out        # the source against itself: trivial
    acc.reset()
    acc.update(batch["mirrored"], batch["target_c2w"], batch["target_K"])
    mirrored = acc.compute()
    assert mirrored["camera_RotErr"] > 5 * out["camera_gt_RotErr"]
    assert mirrored["camera_matched_pixels"] is None and "camera_gt_RotErr" not in mirrored   # no source, no truth


def test_small_frames_are_reported_unavailable_not_scored(batch):
    acc = CameraAccuracy()
    small = torch.nn.functional.interpolate(batch["target"][0], size=(32, 32), mode="area")[None]
    acc.update(small, batch["target_c2w"], batch["target_K"], small, small)
    out = acc.compute()
    assert out["camera_unavailable"] == "unavailable: frames smaller than 96 px (got 32x32) for 1 video(s)"
    assert out["camera_RotErr"] is None and out["camera_videos"] == 0


def test_the_test_report_scores_camera_only_in_the_test_stage(batch):
    evaluator = VideoEvaluator()
    evaluator.update(batch["target"], batch)
    assert not any(k.startswith("camera_") for k in evaluator.compute())      # validation: no estimation cost
    evaluator.update(batch["target"], batch, camera=True)
    results = evaluator.compute()
    assert results["camera_videos"] == 1 and results["camera_RotErr"] == results["camera_gt_RotErr"]
    assert results["psnr"] == 100.0                    # the video metrics are still there


def test_predict_index_has_camera_scores_per_video_and_their_mean(batch, tmp_path):
    writer = PredictionWriter(output_dir=str(tmp_path), side_by_side=False)
    trainer = SimpleNamespace(world_size=1, global_rank=0)
    writer.on_predict_epoch_start(trainer, None)
    small = {**batch, "target": batch["target"][:, :, :, :32, :32], "source": batch["source"][:, :, :, :32, :32],
             "key": ["small"]}
    writer.on_predict_batch_end(trainer, None, {"generated": batch["target"]}, batch, 0)
    writer.on_predict_batch_end(trainer, None, {"generated": small["target"]}, small, 1)
    writer.on_predict_epoch_end(trainer, SimpleNamespace(global_step=0))
    index = json.loads((tmp_path / "index.json").read_text())
    rows = index["extra"]["videos"]
    assert rows[0]["camera"]["rot_err_deg_mean"] < 1.5 and rows[0]["camera"]["lost_frames"] == 0
    assert rows[1]["camera_unavailable"] == "unavailable: frames smaller than 96 px (got 32x32)"
    assert index["metrics"]["camera_RotErr"] == pytest.approx(rows[0]["camera"]["RotErr"])
