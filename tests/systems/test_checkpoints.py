"""Self-describing checkpoints: load_from_checkpoint needs nothing else, and export follows the checkpoint."""
from pathlib import Path

import pytest
import torch
import yaml

from realcam.cli import main as realcam
from tests.systems.test_teacher import CONFIG, tiny_args


@pytest.fixture(scope="module")
def shift5_run(tiny_shards, tmp_path_factory) -> Path:
    """A teacher trained 2 steps with a command-line override the stock YAML contradicts (shift 3.0 there)."""
    root = tmp_path_factory.mktemp("shift5")
    assert realcam(["fit", *tiny_args(tiny_shards, root, "--trainer.max_steps", "2", "--trainer.limit_val_batches",
                                      "0", "--model.init_args.shift", "5.0")]) == 0
    return root / "checkpoints" / "last.ckpt"


def test_teacher_loads_from_its_checkpoint_alone(shift5_run):
    from realcam.systems import TeacherModule

    module = TeacherModule.load_from_checkpoint(shift5_run, map_location="cpu")
    assert module.hparams.shift == 5.0 and module.schedule.shift == 5.0
    assert module.denoiser.dim == 16 and len(module.denoiser.blocks) == 1
    state = torch.load(shift5_run, map_location="cpu", weights_only=True)["state_dict"]
    for key, value in module.state_dict().items():
        torch.testing.assert_close(value, state[key], rtol=0, atol=0, msg=key)


def test_export_follows_the_checkpoint_not_the_stock_yaml(shift5_run, tmp_path):
    for name, extra in (("with_yaml", ["--config", str(CONFIG)]), ("without_yaml", [])):
        out = tmp_path / name
        assert realcam(["export", "--ckpt", str(shift5_run), "--out", str(out), "--role", "teacher", *extra]) == 0
        bundle = yaml.safe_load((out / "config.yaml").read_text())
        assert bundle["shift"] == 5.0, name
        assert bundle["network"]["init_args"]["dim"] == 16 and bundle["image_size"] == [16, 16]
        assert bundle["provenance"]["global_step"] == 2


def test_a_yaml_that_contradicts_the_checkpoint_is_refused_by_key(shift5_run, tmp_path, capsys):
    cfg = yaml.safe_load(CONFIG.read_text())
    cfg["model"]["init_args"]["camera_dropout"] = 0.3          # the run trained with the stock 0.1
    edited = tmp_path / "edited.yaml"
    edited.write_text(yaml.safe_dump(cfg))
    code = realcam(["export", "--config", str(edited), "--ckpt", str(shift5_run), "--out", str(tmp_path / "b")])
    err = capsys.readouterr().err
    assert code == 2 and "model.init_args.camera_dropout" in err and "Traceback" not in err
    assert not (tmp_path / "b").exists()


def test_the_yaml_fills_what_a_checkpoint_lacks_and_must_agree(tmp_path):
    """A system built in Python with a network instance cannot record it: the YAML supplies the network, and a
    value contradicting the checkpoint is still refused."""
    import lightning as L
    from realcam.modules.backbone import CrossFrameDiT
    from realcam.streaming import run_bundle_config
    from realcam.systems import TeacherModule

    net = CrossFrameDiT(in_channels=48, dim=16, depth=1, heads=2, ffn_dim=32, freq_dim=16)
    module = TeacherModule(net, codec="pixel", shift=5.0)
    assert "denoiser" not in module.hparams
    trainer = L.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False)
    trainer.strategy.connect(module)
    ckpt = tmp_path / "python.ckpt"
    trainer.save_checkpoint(ckpt)
    stock = yaml.safe_load(CONFIG.read_text())
    cfg = {"model": {"class_path": stock["model"]["class_path"],
                     "init_args": {"denoiser": stock["model"]["init_args"]["denoiser"], "shift": 5.0}},
           "data": {"init_args": {"image_size": [32, 32]}}}
    agreeing = tmp_path / "agree.yaml"
    agreeing.write_text(yaml.safe_dump(cfg))
    bundle = run_bundle_config(ckpt, agreeing)
    assert bundle["network"]["init_args"]["dim"] == 128 and bundle["shift"] == 5.0      # network from the YAML
    cfg["model"]["init_args"]["shift"] = 3.0
    agreeing.write_text(yaml.safe_dump(cfg))
    with pytest.raises(ValueError, match="model.init_args.shift"):
        run_bundle_config(ckpt, agreeing)                   # the run was 5.0 and overrode nothing on a command line
    with pytest.raises(ValueError, match="records no model config"):
        run_bundle_config(ckpt)
