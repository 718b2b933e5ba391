"""Training from `realcam data encode` output: latent batches, no VAE or text encoder in training, tiny-wan systems."""
from __future__ import annotations

import warnings
from pathlib import Path

import lightning as L
import pytest
import torch
import yaml
from tartools import rewrite_member

from realcam.cli import main as realcam_main
from realcam.data.datamodule import RealcamDataModule
from realcam.data.encode import decode_latent_sample, load_text_empty
from realcam.data.make import make_shards
from realcam.data.shards import iter_shard
from realcam.modules.backbone import PRESETS, CrossFrameDiT
from realcam.modules.codecs import PixelCodec
from realcam.modules.flow import FlowSchedule
from realcam.modules.wan_vae import WanCodec
from realcam.systems.common import prepare_batch
from realcam.systems.ode_data import read_ode_pairs, write_ode_pairs
from realcam.systems.ode_datamodule import OdePairDataModule
from realcam.systems.student import OdeInitModule, SelfForcingDMDModule
from realcam.systems.teacher import TeacherModule

pytestmark = pytest.mark.timeout(300)
T = 9      # 1 + 4 * 2 frames -> 3 latent frames of 16 x 2 x 2 (16 x 16 pixels)


@pytest.fixture(scope="module")
def encoded(tmp_path_factory, tiny_wan_vae_dir, tiny_umt5_dir) -> dict:
    root = tmp_path_factory.mktemp("latent_dm")
    make_shards(root / "src", 4, strategies=("pingpong", "none"), lengths=(T,), height=16, width=16,
                samples_per_shard=2, progress=False)
    assert realcam_main(["data", "encode", str(root / "src"), "--out", str(root / "out"), "--vae",
                         str(tiny_wan_vae_dir), "--text-encoder", str(tiny_umt5_dir), "--prompt", "a car moves left",
                         "--quiet"]) == 0
    samples = {k: e for p in sorted((root / "out").glob("*.tar")) for k, e in iter_shard(p)}
    return dict(root=root, out=root / "out", src=root / "src", vae=tiny_wan_vae_dir, samples=samples,
                text_dim=int(load_text_empty(root / "out").shape[-1]))


def _dm(folder: Path, **kw) -> RealcamDataModule:
    args = dict(train_shards=str(folder / "train-*.tar"), val_shards=str(folder / "train-*.tar"), batch_size=2,
                num_workers=0, train_batches_per_epoch=2, shuffle_buffer=0, log_corrupt=False)
    return RealcamDataModule(**{**args, **kw})


@pytest.fixture
def no_encode(monkeypatch):
    """Training must never run the VAE: any codec encode raises."""
    def refuse(self, *args):
        raise AssertionError("codec.encode was called during training")
    monkeypatch.setattr(WanCodec, "encode", refuse)
    monkeypatch.setattr(PixelCodec, "encode", refuse)


def test_latent_batches_hold_the_stored_latents_and_text(encoded, monkeypatch):
    dm = _dm(encoded["out"])
    assert dm.latents == {"train": True, "val": True, "test": False, "predict": False}
    import realcam.data.latents as latents_mod
    monkeypatch.setattr(latents_mod, "decode_sample", lambda *a: pytest.fail("training decoded frames"))
    batches = list(dm.train_dataloader())
    assert len(batches) == 2
    for batch in batches:
        assert "source" not in batch and "target" not in batch and batch["length"] == T
        assert batch["source_latents"].shape == batch["target_latents"].shape == (2, 3, 16, 2, 2)
        assert batch["target_c2w"].shape == (2, T, 4, 4) and batch["source_K"].shape == (2, T, 3, 3)
        for b, key in enumerate(batch["key"]):
            want = decode_latent_sample(encoded["samples"][key], key)
            assert torch.equal(batch["target_latents"][b], want["target_latents"])
            assert torch.equal(batch["target_c2w"][b], want["target_c2w"])
            assert torch.equal(batch["text"][b, :want["text"].shape[0]], want["text"])
        assert batch["text"].shape[-1] == encoded["text_dim"]
    assert torch.equal(dm.text_empty, load_text_empty(encoded["out"])) and dm.text_empty.abs().sum() > 0
    padded = next(iter(_dm(encoded["out"], text_length=512).train_dataloader()))["text"]     # Wan's padding
    L_ = batches[0]["text"].shape[1]
    assert padded.shape[1] == 512 and padded[:, L_:].abs().sum() == 0 and torch.equal(padded[:, :L_],
                                                                                       batches[0]["text"])
    monkeypatch.undo()
    val = next(iter(dm.val_dataloader()))      # evaluation decodes the frames too, for the metrics
    assert val["source"].shape == (2, T, 3, 16, 16) and val["source"].dtype == torch.float32
    assert val["source_latents"].shape == (2, 3, 16, 2, 2)


def test_length_buckets_crop_to_a_latent_prefix(encoded, tiny_wan_vae_dir):
    """The VAE is causal: the first 2 latent frames of a 9-frame clip are the latents of its first 5 frames."""
    batch = next(iter(_dm(encoded["out"], length_buckets=[5, 7]).train_dataloader()))   # 7 is no 1 + 4k prefix
    assert batch["source_latents"].shape[1] == 2 and batch["length"] == 5 and batch["revisit"].shape == (2, 5)
    key = batch["key"][0]
    full = decode_latent_sample(encoded["samples"][key], key)["source_latents"]
    assert torch.equal(batch["source_latents"][0], full[:2])


def test_bad_options_and_shards_name_the_fix(encoded):
    with pytest.raises(ValueError, match=r"train_shards: .* holds shards without latents .*realcam data encode"):
        _dm(encoded["src"], val_shards=None, latents=True)
    with pytest.raises(ValueError, match=r"max_zoom=2.0 cannot apply to the latent shards of train_shards"):
        _dm(encoded["out"], max_zoom=2.0)
    with pytest.raises(ValueError, match=r"train_shards were encoded at 16x16 but image_size=\[8, 8\]: .*set "
                                         r"image_size: \[16, 16\]"):
        _dm(encoded["out"], image_size=(8, 8))
    assert next(iter(_dm(encoded["out"], image_size=(16, 16)).train_dataloader()))["source_latents"].shape[-1] == 2
    frames = _dm(encoded["out"], latents=False, image_size=(8, 8))          # the frames of the same shards
    assert next(iter(frames.train_dataloader()))["source"].shape == (2, T, 3, 8, 8)
    batch = next(iter(_dm(encoded["out"]).train_dataloader()))
    with pytest.raises(ValueError, match=r"latent_channels=48: encode the shards with the model's codec"):
        prepare_batch(batch, PixelCodec(4), "first_source")
    with pytest.raises(ValueError, match=r"3 frames for T=9 video frames .* PixelCodec makes 3 video frames"):
        prepare_batch(batch, PixelCodec(1, channels=16), "first_source")        # 16 channels, one frame per latent
    del batch["text"]
    with pytest.raises(ValueError, match=r"no `text` but the denoiser has text_dim=16: .*--text-encoder PATH"):
        prepare_batch(batch, WanCodec(str(encoded["vae"])), "first_source", text_dim=16)
    with pytest.raises(ValueError, match=r"codec wan gives 16 latent channels but denoiser in_channels=12: set "
                                         r"denoiser.init_args.in_channels: 16"):
        TeacherModule(CrossFrameDiT(in_channels=12, dim=16, depth=1, heads=2, ffn_dim=32, freq_dim=16),
                      codec=WanCodec(str(encoded["vae"])))


def test_resume_mid_epoch_and_corrupt_samples(encoded, tmp_path):
    def loader():
        return _dm(encoded["out"], train_batches_per_epoch=3, shuffle_buffer=2).train_dataloader()

    straight = list(loader())
    resumed = loader()
    resumed.load_state_dict({"epoch": 0, "consumed": 2})
    rest = list(resumed)
    assert len(rest) == 1 and rest[0]["key"] == straight[2]["key"]
    assert torch.equal(rest[0]["target_latents"], straight[2]["target_latents"])
    for p in encoded["out"].iterdir():
        (tmp_path / p.name).write_bytes(p.read_bytes())
    rewrite_member(tmp_path / "train-000000.tar", "train-00000001.source_latents.npy", b"broken")
    dm = _dm(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        keys = [k for batch in dm.val_dataloader() for k in batch["key"]]
    assert sorted(keys) == ["train-00000000", "train-00000002", "train-00000003"] and dm.corrupt_count == 1


def _net(name: str, text_dim: int, **kw) -> CrossFrameDiT:
    from realcam.registry import BACKBONES

    torch.manual_seed(0)
    return BACKBONES.build(name, text_dim=text_dim, **kw)


def _trainer(steps: int) -> L.Trainer:
    return L.Trainer(max_steps=steps, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                     enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                     num_sanity_val_steps=0)


def test_teacher_ode_pairs_ode_init_and_dmd_from_latents_with_text(encoded, tmp_path, no_encode):
    codec, D = WanCodec(str(encoded["vae"])), encoded["text_dim"]
    teacher = TeacherModule(_net("tiny-wan", D), codec=codec, warmup_steps=1, ema_start=0, sample_steps=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _trainer(2).fit(teacher, datamodule=_dm(encoded["out"]))
    assert teacher.global_step == 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        metrics = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
                            limit_val_batches=1, default_root_dir=tmp_path).validate(
            teacher, datamodule=_dm(encoded["out"]), verbose=False)[0]
    assert torch.isfinite(torch.tensor(metrics["val/psnr"]))     # decoded latents scored against the frames

    schedule = FlowSchedule(shift=3.0)
    batches = _dm(encoded["out"], latents=True, train_shards=None).val_dataloader()
    write_ode_pairs(teacher.ema.module, codec, batches, tmp_path / "ode", schedule=schedule, steps=2,
                    pose_reference="first_source", text_dim=D)
    pairs = list(read_ode_pairs(str(tmp_path / "ode"), schedule))
    assert len(pairs) == 4 and pairs[0]["text"].shape[-1] == D and pairs[0]["states"].shape == (4, 3, 16, 2, 2)
    assert pairs[0]["target_c2w"].shape == (3, 4, 4)            # one camera per latent frame (frames 0, 4, 8)

    # `realcam data make-ode-pairs` from the teacher's checkpoint and YAML writes the same pairs from latent shards
    ckpt, config = tmp_path / "teacher.ckpt", tmp_path / "teacher.yaml"
    torch.save({"state_dict": teacher.state_dict()}, ckpt)
    net_args = {**PRESETS["tiny-wan"], "text_dim": D, "patch": list(PRESETS["tiny-wan"]["patch"])}
    config.write_text(yaml.safe_dump({"model": {"class_path": "realcam.systems.TeacherModule", "init_args": {
        "denoiser": {"class_path": "realcam.modules.backbone.CrossFrameDiT", "init_args": net_args},
        "codec": {"class_path": "realcam.modules.wan_vae.WanCodec", "init_args": {"path": str(encoded["vae"])}},
        "shift": 3.0}}}))
    assert realcam_main(["data", "make-ode-pairs", "--teacher", str(ckpt), "--config", str(config), "--shards",
                         str(encoded["out"]), "--out", str(tmp_path / "ode_cli"), "--steps", "2", "--batch-size",
                         "2", "--precision", "fp32", "--device", "cpu", "--quiet"]) == 0
    for a, b in zip(pairs, read_ode_pairs(str(tmp_path / "ode_cli"), schedule), strict=True):
        assert torch.allclose(a["states"], b["states"], atol=1e-5) and torch.equal(a["text"], b["text"])

    causal = dict(attention_mode="causal")
    student = OdeInitModule(generator=_net("tiny-wan", D, **causal), codec=codec, shift=3.0, ema_start=0,
                            warmup_steps=1)
    ode_dm = OdePairDataModule(train_shards=str(tmp_path / "ode"), batch_size=2, num_workers=0,
                               train_batches_per_epoch=1, shuffle_buffer=0, log_corrupt=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _trainer(1).fit(student, datamodule=ode_dm)
    assert student.global_step == 1

    dmd = SelfForcingDMDModule(generator=_net("tiny-wan", D, **causal), real_score=teacher.ema.module,
                               codec=codec, shift=3.0, critic_ratio=1, guidance=2.0)
    seen = []
    real_forward = dmd.real_score.forward
    dmd.real_score.forward = lambda x, sigma, cond, *a, **k: (seen.append(cond), real_forward(x, sigma, cond, *a,
                                                                                               **k))[1]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _trainer(1).fit(dmd, datamodule=_dm(encoded["out"], train_batches_per_epoch=1))
    assert int(dmd.iteration) == 1 and len(seen) == 2        # guidance: conditional and camera-dropped passes
    assert all(c.text is not None and c.text.shape[-1] == D for c in seen)
    assert torch.equal(seen[0].text, seen[1].text) and seen[1].camera_keep.sum() == 0


def test_latent_loader_bench_writes_its_table(tmp_path, capsys):
    from realcam.data.bench_latents import WanShapedEncoder

    enc = WanShapedEncoder()
    assert enc.encode(torch.zeros(1, 9, 3, 16, 24)).shape == (1, 3, 16, 2, 3) and enc.latent_frames(81) == 21
    with pytest.raises(ValueError, match="1 \\+ 4k"):
        enc.latent_frames(8)
    out = tmp_path / "bench.json"
    assert realcam_main(["data", "bench", "--latents", "--height", "16", "--width", "16", "--length", "5",
                         "--num-samples", "2", "--batch-size", "1", "--workers", "0", "--out", str(out)]) == 0
    import json
    rows = json.loads(out.read_text())["latent_loader"]
    assert {r["frame_format"] for r in rows} == {"mp4", "npy"} and all(r["speedup"] > 0 for r in rows)
    assert "frames vs precomputed latents" in capsys.readouterr().out


def test_latent_prefix_follows_the_codecs_frame_rule():
    from realcam.data.latents import latent_prefix

    assert [latent_prefix(81, 21, t) for t in (1, 5, 9, 81, 7)] == [1, 2, 3, 21, None]      # Wan: 1 + 4k
    assert latent_prefix(6, 6, 4) == 4                                                      # frame-wise codec
    assert latent_prefix(9, 4, 5) is None                                                   # no causal VAE rule
