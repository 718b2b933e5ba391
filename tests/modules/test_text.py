"""UMT5TextEncoder: real tokens only, the same in a batch as alone, Wan's folder layouts, clear errors."""
import shutil

import pytest
import torch

from realcam.modules.text import UMT5TextEncoder


def test_batch_equals_one_by_one_and_keeps_real_tokens(tiny_umt5_dir):
    enc = UMT5TextEncoder(tiny_umt5_dir)
    prompts = ["", "a dog walks on the street", "the car"]
    batch = enc.encode(prompts)
    assert [t.shape for t in batch] == [(1, 16), (7, 16), (3, 16)]       # words + </s>
    for prompt, got in zip(prompts, batch):
        ids = enc.tokenizer([prompt], return_tensors="pt")["input_ids"]   # alone, no padding, no mask
        with torch.no_grad():
            alone = enc.model(input_ids=ids).last_hidden_state[0]
        assert (got - alone).abs().max() <= 1e-5
    assert enc.encode(["a dog walks on the street"])[0].shape == (7, 16) and enc.dim == 16
    short = UMT5TextEncoder(tiny_umt5_dir, max_length=3).encode(["a dog walks on the street"])[0]
    assert short.shape == (3, 16)                                          # truncated like Wan's 512


def test_wan_diffusers_folder_layout(tiny_umt5_dir, tmp_path):
    """A Wan diffusers model folder: text_encoder/ (config + weights) and tokenizer/ beside each other."""
    shutil.copytree(tiny_umt5_dir, tmp_path / "text_encoder", ignore=shutil.ignore_patterns("tokenizer*"))
    shutil.copytree(tiny_umt5_dir, tmp_path / "tokenizer", ignore=shutil.ignore_patterns("config.json", "model*"))
    got = UMT5TextEncoder(tmp_path).encode(["the camera moves left"])[0]
    assert torch.equal(got, UMT5TextEncoder(tiny_umt5_dir).encode(["the camera moves left"])[0])


def test_errors_name_the_folder_and_the_fix(tiny_umt5_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match="is not a folder; pass the umT5 encoder as a local folder"):
        UMT5TextEncoder(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="has no config.json"):
        UMT5TextEncoder(tmp_path)
    shutil.copytree(tiny_umt5_dir, tmp_path / "no_tok", ignore=shutil.ignore_patterns("tokenizer*"))
    with pytest.raises(FileNotFoundError, match="no tokenizer in"):
        UMT5TextEncoder(tmp_path / "no_tok")
    with pytest.raises(ValueError, match="dtype='int8' is unknown"):
        UMT5TextEncoder(tiny_umt5_dir, dtype="int8")
    with pytest.raises(TypeError, match="list of strings"):
        UMT5TextEncoder(tiny_umt5_dir).encode("a dog")
