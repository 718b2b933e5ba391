"""The teacher through ``realcam fit/test``: smoke run, exact kill-and-resume, config errors."""
import json
from pathlib import Path

import pytest
import torch

from realcam.cli import main as realcam
from tests.systems.conftest import RESUME_ARGS

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "configs" / "teacher" / "tiny.yaml"


def tiny_args(shards: Path, root: Path, *extra: str) -> list[str]:
    """The shipped tiny config shrunk to seconds: a 1-layer 16-wide model on 16x16 frames."""
    return [
        "--config", str(CONFIG),
        "--trainer.default_root_dir", str(root),
        "--trainer.enable_progress_bar", "false",
        "--trainer.precision", "32-true",
        "--model.init_args.denoiser.init_args.dim", "16",
        "--model.init_args.denoiser.init_args.depth", "1",
        "--model.init_args.denoiser.init_args.heads", "2",
        "--model.init_args.denoiser.init_args.ffn_dim", "32",
        "--model.init_args.denoiser.init_args.freq_dim", "16",
        "--model.init_args.sample_steps", "2",
        "--model.init_args.warmup_steps", "1",
        "--model.init_args.ema_start", "1",
        "--data.init_args.train_shards", str(shards / "train-000000.tar"),
        "--data.init_args.val_shards", str(shards / "val-000000.tar"),
        "--data.init_args.test_shards", str(shards / "val-000000.tar"),
        "--data.init_args.image_size", "[16, 16]",
        "--data.init_args.length_buckets", "[4]",
        "--data.init_args.batch_size", "2",
        "--data.init_args.num_workers", "0",
        *extra,
    ]


def test_fit_two_steps_then_test_writes_a_report(tiny_shards, tmp_path):
    realcam(["fit", *tiny_args(tiny_shards, tmp_path, "--trainer.max_steps", "2", "--trainer.val_check_interval", "2")])
    ckpt = next(tmp_path.rglob("last.ckpt"))
    realcam(["test", *tiny_args(tiny_shards, tmp_path), "--ckpt_path", str(ckpt)])
    report = json.loads(next(tmp_path.rglob("test_report.json")).read_text())
    metrics = report["metrics"] if "metrics" in report else report
    assert metrics["num_frames"] == 16 and metrics["psnr"] is not None
    assert metrics["baseline/source_copy/psnr"] is not None
    assert "lpips_unavailable" in metrics, "without local LPIPS weights the report must say why LPIPS is missing"
    assert metrics["camera_unavailable"].startswith("unavailable: frames smaller than 96 px (got 16x16)")
    assert list(tmp_path.rglob("*.mp4")), "side-by-side sample videos are written to the log directory"
    assert report["extra"]["sample_steps"] == 2


def test_predict_writes_every_video_and_an_index(tiny_shards, tmp_path):
    """realcam predict: a video, a side-by-side and an index row per sample, with no callback configured; with
    PredictionWriter(save_frames=True) the stored frames are the ones the index scores."""
    import numpy as np
    from realcam import metrics
    from realcam.data.datamodule import RealcamDataModule
    from realcam.data.video import read_video

    realcam(["fit", *tiny_args(tiny_shards, tmp_path / "fit", "--trainer.max_steps", "1",
                               "--trainer.limit_val_batches", "0")])
    ckpt = str(next((tmp_path / "fit").rglob("last.ckpt")))
    realcam(["predict", *tiny_args(tiny_shards, tmp_path / "default"), "--ckpt_path", ckpt])
    folder = tmp_path / "fit" / "predict" / "last" / "predictions"       # under the run it evaluates
    index = json.loads((folder / "index.json").read_text())
    rows = index["extra"]["videos"]
    assert [r["key"] for r in rows] == [f"val{i:04d}" for i in range(4)] and index["metrics"]["videos"] == 4
    assert index["extra"]["sample_steps"] == 2 and index["extra"]["stage"] == "predict"
    assert index["metrics"]["camera_unavailable"] == rows[0]["camera_unavailable"] == \
        "unavailable: frames smaller than 96 px (got 16x16)"
    for row in rows:
        assert read_video(folder / row["files"]["video"]).shape == (4, 16, 16, 3)
        assert read_video(folder / row["files"]["side_by_side"]).shape == (4, 16, 3 * 16 + 4, 3)
    writer = [{"class_path": "realcam.systems.evaluation.PredictionWriter",
               "init_args": {"output_dir": str(tmp_path / "out"), "side_by_side": False, "save_frames": True}}]
    realcam(["predict", *tiny_args(tiny_shards, tmp_path / "custom"), "--ckpt_path", ckpt, "--eval_name", "custom",
             "--data.init_args.predict_shards", str(tiny_shards / "train-000000.tar"),
             "--trainer.callbacks", json.dumps(writer)])
    index = json.loads((tmp_path / "out" / "index.json").read_text())
    rows = {r["key"]: r for r in index["extra"]["videos"]}
    assert sorted(p.name for p in (tmp_path / "out").glob("*.mp4")) == sorted(f"{k}.mp4" for k in rows)
    batch = next(iter(RealcamDataModule(test_shards=str(tiny_shards / "train-000000.tar"), batch_size=2,
                                        num_workers=0, image_size=(16, 16), length_buckets=[4],
                                        log_corrupt=False).test_dataloader()))
    for b, key in enumerate(batch["key"]):
        frames = torch.from_numpy(np.load(tmp_path / "out" / rows[key]["files"]["frames"]))
        generated = frames.permute(0, 3, 1, 2).float() / 127.5 - 1
        psnr = metrics.frame_psnr(metrics.to_unit(generated), metrics.to_unit(batch["target"][b])).mean()
        assert abs(float(psnr) - rows[key]["psnr"]) < 0.05      # the index scores the frames it wrote (uint8)
    assert not (tmp_path / "fit" / "predict" / "custom" / "predictions").exists(), "a configured writer replaces the default"


def test_prediction_file_names_never_collide():
    from realcam.systems.evaluation import PredictionWriter, safe_name

    writer = PredictionWriter()
    stems = [writer._unique(safe_name(k, "x")) for k in ["a", "a", "a_sbs", "b_sbs", "b", "a-2", "../etc/x", ".."]]
    assert stems == ["a", "a-2", "a_sbs-2", "b_sbs", "b-2", "a-2-2", "_etc_x", "x"]
    files = [f"{s}{tail}" for s in stems for tail in ("", "_sbs")]
    assert len(set(files)) == len(files)


def test_command_line_model_overrides_beat_the_checkpoint_hyperparameters(tiny_shards, tmp_path):
    """Lightning fills the model config from the checkpoint; what the user types explicitly must still win."""
    realcam(["fit", *tiny_args(tiny_shards, tmp_path / "fit", "--trainer.max_steps", "1",
                               "--trainer.limit_val_batches", "0")])
    ckpt = next((tmp_path / "fit").rglob("last.ckpt"))
    realcam(["test", *tiny_args(tiny_shards, tmp_path / "test"), "--ckpt_path", str(ckpt),
             "--model.init_args.sample_steps=3", "--model.init_args.guidance", "1.5"])
    report = json.loads((tmp_path / "fit" / "test" / "last" / "test_report.json").read_text())
    assert (report["extra"]["sample_steps"], report["extra"]["guidance"]) == (3, 1.5)


def test_x0_weighting_trains_through_fit(tiny_shards, tmp_path):
    realcam(["fit", *tiny_args(tiny_shards, tmp_path, "--trainer.max_steps", "2", "--trainer.limit_val_batches", "0",
                               "--trainer.log_every_n_steps", "1", "--model.init_args.loss_weighting", "x0")])
    import csv
    rows = list(csv.DictReader(next(tmp_path.rglob("metrics.csv")).open()))
    total = [float(r["train/loss"]) for r in rows if r.get("train/loss")]
    assert len(total) == 2 and all(0 < t < 100 for t in total)


def _weights(ckpt: Path) -> dict[str, torch.Tensor]:
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    return state["state_dict"]


@pytest.mark.parametrize("batches_per_epoch", ["2", "3"])
def test_killed_run_resumes_to_the_same_weights(tiny_shards, tmp_path, batches_per_epoch):
    """Killed at step 2: on an epoch boundary (2 batches per epoch) and mid-epoch (3 batches per epoch, where the
    resumable loader skips the epoch's batches the killed run already trained on)."""
    common = [*RESUME_ARGS, "--data.init_args.train_batches_per_epoch", batches_per_epoch]
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    realcam(["fit", *tiny_args(tiny_shards, straight, "--trainer.max_steps", "4", *common)])
    realcam(["fit", *tiny_args(tiny_shards, killed, "--trainer.max_steps", "2", *common)])   # "killed" at step 2
    resume = next(p for p in killed.rglob("*.ckpt") if "step=2" in p.name)
    realcam(["fit", *tiny_args(tiny_shards, killed, "--trainer.max_steps", "4", *common), "--ckpt_path", str(resume)])
    a = _weights(next(p for p in straight.rglob("*.ckpt") if "step=4" in p.name))
    b = _weights(next(p for p in sorted(killed.rglob("*.ckpt")) if "step=4" in p.name))
    assert a.keys() == b.keys()
    assert any(k.startswith("ema.module.") for k in a), "EMA weights live in the checkpoint"
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)


@pytest.mark.parametrize("override,needle", [
    (["--model.init_args.denoiser.init_args.dimm", "16"], "dimm"),
    (["--model.init_args.denoiser.init_args.camera_encoder", "pluker"], "did you mean 'plucker'"),
    (["--data.init_args.train_shards", "/nonexistent/train-{000000..000003}.tar"], "train_shards"),
    (["--model.init_args.blend_supervision", "0.1"], "blend_supervision"),
])
def test_bad_configs_fail_before_training_and_name_the_key(tiny_shards, tmp_path, override, needle, capsys):
    try:
        code = realcam(["fit", *tiny_args(tiny_shards, tmp_path, "--trainer.max_steps", "1"), *override])
    except SystemExit as err:           # jsonargparse's own errors (an unknown key) exit 2 after printing usage
        code = err.code
    captured = capsys.readouterr()
    assert code not in (0, None)
    assert needle in captured.err + captured.out
    assert "Traceback" not in captured.err + captured.out
    assert not list(tmp_path.rglob("*.ckpt")), "nothing trained"
