"""`realcam data encode`: Wan VAE latents and umT5 text into new shards, read back by decode_latent_sample."""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from realcam.cli import main as realcam_main
from realcam.data.make import make_shards
from realcam.data.encode import (TEXT_EMPTY, batch_text, decode_latent_sample, frames_to_video, load_text_empty,
                                 pad_text)
from realcam.data.check import check_shards
from realcam.data.shards import decode_sample, iter_shard
from realcam.data.video import read_video, write_video
from realcam.modules.text import UMT5TextEncoder
from realcam.modules.wan_vae import WanCodec

pytestmark = pytest.mark.timeout(300)


def _shards(out: Path, n: int = 3, length: int = 5, **kw) -> Path:
    make_shards(out, n, source="synthetic", strategies=("pingpong", "none"), lengths=(length,), height=16, width=16,
                samples_per_shard=2, progress=False, **kw)
    return out


def _digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def _encode(*args) -> int:
    return realcam_main(["data", "encode", *map(str, args), "--quiet"])


@pytest.fixture(scope="module")
def encoded(tmp_path_factory, tiny_wan_vae_dir, tiny_umt5_dir):
    root = tmp_path_factory.mktemp("encode")
    src = _shards(root / "src")
    before = _digests(src)
    prompts = root / "prompts.json"
    prompts.write_text(json.dumps({"train-00000001": "a dog walks on the street"}))
    assert _encode(src, "--out", root / "out", "--vae", tiny_wan_vae_dir, "--text-encoder", tiny_umt5_dir,
                   "--prompt", "the camera moves left", "--prompts", prompts) == 0
    return dict(src=src, out=root / "out", before=before, vae=tiny_wan_vae_dir, text=tiny_umt5_dir)


def test_encoded_shards_hold_inputs_latents_and_text(encoded):
    src, out = encoded["src"], encoded["out"]
    assert _digests(src) == encoded["before"], "the input shards changed"
    assert sorted(p.name for p in out.iterdir()) == ["index.json", TEXT_EMPTY, "train-000000.tar",
                                                     "train-000001.tar"]
    codec, text = WanCodec(str(encoded["vae"])), UMT5TextEncoder(encoded["text"])
    inputs = {key: entries for shard in sorted(src.glob("*.tar")) for key, entries in iter_shard(shard)}
    got = {key: entries for shard in sorted(out.glob("*.tar")) for key, entries in iter_shard(shard)}
    assert list(got) == list(inputs) == ["train-00000000", "train-00000001", "train-00000002"]
    for key, entries in got.items():
        assert all(entries[s] == b for s, b in inputs[key].items()), "input members must be copied unchanged"
        sample = decode_latent_sample(entries, key)
        seq = decode_sample(entries, key)
        with torch.no_grad():
            for stream in ("source", "target"):
                want = codec.encode(frames_to_video(getattr(seq, f"{stream}_frames")))[0]
                assert sample[f"{stream}_latents"].shape == (2, 16, 2, 2)
                assert torch.equal(sample[f"{stream}_latents"], want)
        prompt = "a dog walks on the street" if key == "train-00000001" else "the camera moves left"
        assert sample["latents_meta"]["prompt"] == prompt
        assert torch.equal(sample["text"], text.encode([prompt])[0])
        assert torch.equal(sample["target_c2w"], seq.target_c2w) and sample["revisit"] == seq.revisit
    assert not torch.equal(decode_latent_sample(got["train-00000000"])["source_latents"],
                           decode_latent_sample(got["train-00000001"])["source_latents"])
    report = check_shards(out)
    assert report["bad"] == [] and report["samples"] == 3


def test_empty_prompt_is_stored_once_and_is_not_zeros(encoded):
    empty = load_text_empty(encoded["out"])
    assert torch.equal(empty, UMT5TextEncoder(encoded["text"]).encode([""])[0])
    assert empty.shape == (1, 16) and empty.abs().mean() > 0.1               # the EOS token's output, not zeros
    entry = json.loads((encoded["out"] / "index.json").read_text())["splits"]["train"]
    assert entry["text_empty"]["sha256"] == hashlib.sha256((encoded["out"] / TEXT_EMPTY).read_bytes()).hexdigest()
    assert entry["codec"]["name"] == "wan" and entry["text_encoder"]["dim"] == 16 and entry["num_sequences"] == 3
    padded = batch_text([empty, torch.ones(3, 16)], length=512)
    assert padded.shape == (2, 512, 16) and torch.equal(padded[0, 0], empty[0]) and padded[0, 1:].abs().sum() == 0
    with pytest.raises(ValueError, match="more than length=2"):
        pad_text(torch.ones(3, 16), 2)


def test_float16_latents_and_reencoding_refused(encoded, tmp_path):
    assert _encode(encoded["src"], "--out", tmp_path, "--vae", encoded["vae"], "--dtype", "float16") == 0
    key, entries = next(iter_shard(tmp_path / "train-000000.tar"))
    half = decode_latent_sample(entries, key, require_text=False)
    full = decode_latent_sample(next(iter_shard(encoded["out"] / "train-000000.tar"))[1], key)
    assert half["text"] is None and half["latents_meta"]["dtype"] == "float16"
    assert torch.allclose(half["source_latents"], full["source_latents"], rtol=1e-3, atol=1e-3)
    with pytest.raises(ValueError, match=r"has no text.npy: .*realcam data encode SRC .*--text-encoder"):
        decode_latent_sample(entries, key)
    assert not (tmp_path / TEXT_EMPTY).exists()
    assert _encode(encoded["out"], "--out", tmp_path / "again", "--vae", encoded["vae"]) == 2   # already encoded


def test_multicam_folder_81_frames_give_21_latent_frames(tmp_path, fixtures_dir, tiny_wan_vae_dir, one_thread):
    """A MultiCamVideo scene folder loaded at its videos' own resolution (no resize), 81 frames -> 21 latents."""
    recam = fixtures_dir / "recammaster"
    frames = read_video(recam / "videos" / "10.mp4", stop=82, size=(16, 32))
    scene = tmp_path / "f24_aperture10" / "scene1"
    (scene / "cameras").mkdir(parents=True)
    shutil.copy(recam / "camera_extrinsics.json", scene / "cameras" / "camera_extrinsics.json")
    for i, cam in enumerate(("cam01", "cam02")):
        write_video(scene / "videos" / f"{cam}.mp4", frames[i:i + 81], fps=30, crf=10)
    make_shards(tmp_path / "src", 1, source="multicam_folder", strategies=("none",), lengths=(81,),
                source_args={"root": str(tmp_path), "height": None, "width": None}, progress=False)
    assert _encode(tmp_path / "src", "--out", tmp_path / "out", "--vae", tiny_wan_vae_dir) == 0
    key, entries = next(iter_shard(tmp_path / "out" / "train-000000.tar"))
    sample = decode_latent_sample(entries, key, require_text=False)
    assert sample["meta"]["length"] == 81 and (sample["meta"]["height"], sample["meta"]["width"]) == (16, 32)
    assert sample["source_latents"].shape == sample["target_latents"].shape == (21, 16, 2, 4)
    assert sample["source_c2w"].shape == (81, 4, 4)


def test_bad_input_names_the_field_and_the_fix(tmp_path, capsys, tiny_wan_vae_dir, tiny_umt5_dir):
    src = _shards(tmp_path / "src4", n=1, length=4)
    assert _encode(src, "--out", tmp_path / "o", "--vae", tiny_wan_vae_dir) == 2
    assert "lists train sequences of length 4: frames=4 does not fit the 1 + 4k rule" in capsys.readouterr().err
    (src / "index.json").unlink()                          # no index: the sample itself names the rule
    assert _encode(src, "--out", tmp_path / "o", "--vae", tiny_wan_vae_dir) == 2
    err = capsys.readouterr().err
    assert "sample 'train-00000000' has T=4 frames: frames=4 does not fit the 1 + 4k rule" in err
    assert not list((tmp_path / "o").glob("*.tar*")), "a failed run must leave no shard behind"
    src = _shards(tmp_path / "src", n=1)
    assert _encode(src, "--out", tmp_path / "o2", "--vae", tmp_path / "no_vae") == 2
    assert "--vae: codec wan: path=" in (err := capsys.readouterr().err) and "does not exist" in err
    assert _encode(src, "--out", tmp_path / "o2", "--vae", tiny_wan_vae_dir, "--text-encoder", tiny_umt5_dir) == 2
    assert "has no prompt: add it to --prompts" in capsys.readouterr().err
    assert _encode(src, "--out", tmp_path / "o2", "--vae", tiny_wan_vae_dir, "--prompt", "a car") == 2
    assert "need --text-encoder" in capsys.readouterr().err
    assert _encode(src, "--out", tmp_path / "o2", "--vae", tiny_wan_vae_dir, "--text-encoder", tmp_path) == 2
    assert "--text-encoder: text_encoder=" in (err := capsys.readouterr().err) and "has no config.json" in err
    assert _encode(src, "--out", src, "--vae", tiny_wan_vae_dir) == 2
    assert "is the source folder" in capsys.readouterr().err
    assert _encode(src, "--out", tmp_path / "o3", "--vae", tiny_wan_vae_dir) == 0
    assert _encode(src, "--out", tmp_path / "o3", "--vae", tiny_wan_vae_dir) == 2
    assert "pass --overwrite" in capsys.readouterr().err
    key, entries = next(iter_shard(tmp_path / "o3" / "train-000000.tar"))
    del entries["target_latents.npy"]
    with pytest.raises(ValueError, match=r"no target_latents.npy member .*it was not encoded; encode the shards"):
        decode_latent_sample(entries, key, require_text=False)
