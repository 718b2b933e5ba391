"""The RealCam recipe on Wan runs end to end at tiny-wan size: scripts/tiny_wan_pipeline.py, one step per system.

Every stage is a real command through the Wan code path (diffusers-layout checkpoint, the wan codec, umT5 text,
the wan1.3b configs with sizes and paths overridden); the stream's output follows the 1 + 4k rule on the
ReCamMaster video.
"""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "tiny_wan_pipeline.py"
VIDEO = REPO.parent / "shared" / "fixtures" / "recammaster" / "videos" / "10.mp4"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory) -> tuple[Path, dict]:
    if not VIDEO.is_file():
        pytest.skip(f"{VIDEO} is absent (the ReCamMaster fixture of ../shared/fixtures)")
    work = tmp_path_factory.mktemp("tiny_wan") / "run"
    done = subprocess.run([sys.executable, str(SCRIPT), "--workdir", str(work), "--steps", "1",
                           "--train-sequences", "4"], cwd=REPO, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return work, json.loads((work / "report.json").read_text())


def test_every_stage_runs(pipeline):
    work, report = pipeline
    stages = [row["stage"] for row in report["stages"]]
    assert stages == ["make tiny Wan checkpoint", "make-shards train", "encode train", "make-shards val",
                      "encode val", "fit teacher", "test teacher", "make-ode-pairs", "fit ode", "test ode",
                      "fit dmd", "test dmd", "export", "stream 10.mp4"]
    for row in report["stages"]:
        if row["stage"].startswith("test "):
            assert 0 < row["psnr"] < 100 and 0 < row["source_copy_psnr"] < 100, row
    rows = {row["stage"]: row for row in report["stages"]}
    assert 0 < rows["encode val"]["vae_roundtrip_psnr"] < 100
    assert rows["fit dmd"]["loss"] == "train/dmd_loss" and rows["fit teacher"]["loss_first5"] > 0
    for stage in ("teacher", "ode", "dmd"):
        assert (work / "runs" / stage / "checkpoints" / "last.ckpt").is_file()


def test_training_read_latents_and_text(pipeline):
    work, _ = pipeline
    index = json.loads((work / "data" / "train_latents" / "index.json").read_text())["splits"]["train"]
    assert index["latent_dtype"] and index["text_empty"]["tokens"] >= 1
    config = yaml.safe_load((work / "runs" / "teacher" / "config.yaml").read_text())
    assert config["model"]["init_args"]["denoiser"]["class_path"] == "realcam.pretrained.PretrainedWan"
    assert config["trainer"]["max_steps"] == 1


def test_the_bundle_streams_the_recammaster_video_by_the_1_plus_4k_rule(pipeline):
    work, report = pipeline
    bundle = yaml.safe_load((work / "bundle" / "config.yaml").read_text())
    assert "wan" in json.dumps(bundle["codec"]).lower() and (work / "bundle" / "text.npy").is_file()
    stream = report["stages"][-1]
    assert stream["frames_in"] == stream["frames_out"] == 81 and (81 - 1) % 4 == 0
    out = json.loads((work / "stream" / "10.json").read_text())
    assert out["stats"]["chunks"] == 7 and out["frames_past_last_chunk"] == 0     # 21 latent frames, 3 per chunk


def test_the_bundle_needs_no_pretrained_transformer(pipeline):
    """A bundle holds its own weights: its network is a plain CrossFrameDiT of the checkpoint's architecture, so
    streaming reads neither the pretrained transformer folder nor its 1.3B weights (only the VAE folder)."""
    from realcam.streaming import StreamingGenerator

    work, _ = pipeline
    bundle = yaml.safe_load((work / "bundle" / "config.yaml").read_text())
    assert bundle["network"]["class_path"] == "realcam.modules.backbone.CrossFrameDiT"
    assert bundle["network"]["init_args"]["text_dim"] == 32 and bundle["network"]["init_args"]["chunk_frames"] == 3
    (work / "pretrained" / "transformer").rename(work / "pretrained" / "transformer.away")
    try:
        gen = StreamingGenerator.from_checkpoint(work / "bundle")
    finally:
        (work / "pretrained" / "transformer.away").rename(work / "pretrained" / "transformer")
    assert gen.network.text_dim == 32 and gen.codec.temporal_factor == 4

