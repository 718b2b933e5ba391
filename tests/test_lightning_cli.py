"""`realcam fit|validate|test|predict`: runs named by folder, loggers, one-line config errors, no surprises."""
import csv
import json
import warnings
from pathlib import Path

import pytest

from realcam.cli import main as realcam
from tests.systems.conftest import tiny_shards  # noqa: F401  (the shard fixture)
from tests.systems.test_teacher import CONFIG, REPO, tiny_args

# the must-show command line: a misspelt camera encoder next to --print_config
PRINT_BAD_NAME = ["fit", "--config", str(CONFIG), "--print_config",
                  "--model.init_args.denoiser.init_args.camera_encoder", "pluker"]


def _run(argv: list[str]) -> int:
    try:
        return realcam(argv)
    except SystemExit as err:
        return err.code


def test_print_config_validates_registry_names(capsys, monkeypatch):
    monkeypatch.chdir(REPO)
    assert _run(PRINT_BAD_NAME) not in (0, None)
    out = capsys.readouterr()
    assert "did you mean 'plucker'" in out.err and "camera_encoder" in out.err
    assert "Traceback" not in out.err + out.out and len(out.err.strip().splitlines()) == 1
    assert _run(PRINT_BAD_NAME[:-2]) in (0, None)          # the good name prints the config
    assert "camera_encoder: plucker" in capsys.readouterr().out


def test_no_lightning_args_warning(monkeypatch, capsys):
    """pytest's sys.argv holds arguments, as a shell's would: LightningCLI used to warn on every command."""
    monkeypatch.chdir(REPO)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _run(PRINT_BAD_NAME[:-2])
    assert not [w for w in caught if "args parameter is intended" in str(w.message)]


def test_a_run_is_a_named_folder_with_tensorboard_videos_and_eval_under_it(tiny_shards, tmp_path, capsys):
    from tensorboard.backend.event_processing.event_file_loader import LegacyEventFileLoader

    run = tmp_path / "runs" / "teacher"
    # 4 val samples at batch 2 are 2 batches: limit_val_batches 1 must score one (2 videos x 4 frames)
    assert realcam(["fit", *tiny_args(tiny_shards, run, "--trainer.max_steps", "2", "--trainer.val_check_interval",
                                      "2", "--trainer.limit_val_batches", "1", "--trainer.num_sanity_val_steps",
                                      "0", "--trainer.log_every_n_steps", "1")]) == 0
    ckpt = run / "checkpoints" / "last.ckpt"
    assert ckpt.is_file() and (run / "config.yaml").is_file()
    assert not list(run.rglob("version_*/checkpoints")), "checkpoints live in RUN/checkpoints, not a version_N"
    rows = list(csv.DictReader(next(run.rglob("metrics.csv")).open()))
    frames = [float(r["val/num_frames"]) for r in rows if r.get("val/num_frames")]
    assert frames == [8.0], "limit_val_batches: 1 means one batch"
    assert [float(r["val/num_loop_pairs"]) for r in rows if r.get("val/num_loop_pairs")][0] > 0
    videos, hparams = [], False
    for events in run.glob("events.out.tfevents.*"):
        for event in LegacyEventFileLoader(str(events)).Load():   # as written, no data migration
            for value in event.summary.value:
                if value.tag.startswith("val/side_by_side/"):
                    videos.append(value.image.encoded_image_string[:6])
                hparams |= value.tag == "_hparams_/session_start_info"
    assert videos and all(v.startswith(b"GIF8") for v in videos), "validation videos reach TensorBoard"
    assert hparams, "hyperparameters are logged"
    assert "shift" in (run / "hparams.yaml").read_text() and "denoiser" in (run / "hparams.yaml").read_text()

    # a second run into the same folder would mix checkpoints: refused, one line
    assert realcam(["fit", *tiny_args(tiny_shards, run, "--trainer.max_steps", "1")]) == 2
    assert "--ckpt_path" in capsys.readouterr().err

    # evaluation goes under the run it evaluates, and its report names the checkpoint and its step
    assert realcam(["test", *tiny_args(tiny_shards, tmp_path / "elsewhere"), "--ckpt_path", str(ckpt)]) == 0
    report = json.loads((run / "test" / "last" / "test_report.json").read_text())
    assert report["extra"]["checkpoint"] == str(ckpt.resolve()) and report["extra"]["global_step"] == 2
    assert realcam(["validate", *tiny_args(tiny_shards, tmp_path), "--ckpt_path", str(ckpt),
                    "--eval_name", "val_T4"]) == 0
    report = json.loads((run / "validate" / "val_T4" / "val_report.json").read_text())
    assert report["extra"]["global_step"] == 2
    assert not (tmp_path / "elsewhere").exists()


def test_configs_name_runs_never_versions():
    for path in [*(REPO / "configs").rglob("*.yaml"), REPO / "README.md", *(REPO / "docs").glob("*.md"),
                 *(p for p in (REPO / "scripts").rglob("*") if p.is_file() and p.suffix in (".sh", ".py"))]:
        assert "version_0" not in path.read_text() and "lightning_logs" not in path.read_text(), path


@pytest.mark.parametrize("config", sorted((REPO / "configs" / "teacher").glob("tiny*.yaml")), ids=lambda p: p.name)
def test_teacher_validation_keeps_revisits(config, tmp_path):
    """The tiny teachers' length buckets crop every sample to at most 4 steps: its validation shards are made 4 steps
    long (scripts/teacher_tiny.sh), so the LoopAug revisits survive and val/loop_psnr is tracked in training."""
    import yaml
    from realcam.data.datamodule import RealcamDataModule
    from tests.systems.conftest import make_shards

    data = yaml.safe_load(config.read_text())["data"]["init_args"]
    assert data["val_shards"] == "data/tiny/val_T4"
    script = (REPO / "scripts" / "teacher_tiny.sh").read_text()
    assert '"--length 4" data/tiny/val_T4' in script and max(data["length_buckets"]) >= 4
    make_shards(tmp_path, "val", 4, length=4)
    dm = RealcamDataModule(val_shards=str(tmp_path), batch_size=4, num_workers=0, image_size=(16, 16),
                           length_buckets=data["length_buckets"], log_corrupt=False)
    batch = next(iter(dm.val_dataloader()))
    assert (batch["revisit"] >= 0).any()
