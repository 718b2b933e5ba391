"""The wan codec's loading: both checkpoint layouts, the key mapping against diffusers' converter, and errors."""
import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from realcam.modules.wan_vae import (ORIGINAL_PROBE, WanCodec, config_from_original, diffusers_to_original,
                                     key_table)
from realcam.registry import CODECS


def _original_state(vae, num_res_blocks=1):
    """The tiny VAE's weights renamed into the original Wan layout (the reverse of what loading does)."""
    return {diffusers_to_original(k, num_res_blocks): v.clone() for k, v in vae.state_dict().items()}


def test_key_table_agrees_with_diffusers_converter():
    """Wan2.1's real-size VAE (on meta): our original names, fed to diffusers' own single-file converter, come
    back as exactly the diffusers keys they were made from."""
    from diffusers import AutoencoderKLWan
    from diffusers.loaders.single_file_utils import convert_wan_vae_to_diffusers

    with torch.device("meta"):
        keys = list(AutoencoderKLWan().state_dict())
    table = key_table(keys, num_res_blocks=2)
    assert len(table) == len(keys) == 194 and ORIGINAL_PROBE in table
    marked = {original: torch.tensor([i]) for i, original in enumerate(table)}
    converted = convert_wan_vae_to_diffusers(dict(marked))
    assert sorted(converted) == sorted(keys)
    for original, name in table.items():
        assert converted[name] is marked[original], (original, name)


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_original_layout_file_loads_to_identical_weights(tmp_path, tiny_wan_vae_dir, suffix):
    reference = CODECS.build("wan", path=str(tiny_wan_vae_dir))
    state = _original_state(reference.vae)
    path = tmp_path / f"Wan2.1_VAE{suffix}"
    torch.save(state, path) if suffix == ".pth" else save_file(state, path)
    config = config_from_original(state)
    assert config == dict(base_dim=4, decoder_base_dim=None, z_dim=16, dim_mult=[1, 2, 2, 2], num_res_blocks=1,
                          temperal_downsample=[False, True, True], in_channels=3, out_channels=3)
    codec = WanCodec(str(path))
    want, got = reference.vae.state_dict(), codec.vae.state_dict()
    assert sorted(got) == sorted(want)
    assert all(torch.equal(got[k], want[k]) for k in want)
    assert torch.equal(codec.mean, reference.mean) and torch.equal(codec.std, reference.std)
    video = torch.rand(1, 5, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        assert torch.equal(codec.encode(video), reference.encode(video))


def test_diffusers_layout_single_file_and_model_folder(tmp_path, tiny_wan_vae_dir):
    reference = CODECS.build("wan", path=str(tiny_wan_vae_dir / "vae"))         # the vae/ folder itself
    save_file(reference.vae.state_dict(), tmp_path / "vae.safetensors")
    codec = WanCodec(str(tmp_path / "vae.safetensors"))
    assert all(torch.equal(codec.vae.state_dict()[k], v) for k, v in reference.vae.state_dict().items())


def test_vae_stays_out_of_state_dict_and_parameters(tiny_wan_vae_dir):
    class System(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = nn.Linear(2, 2)
            self.codec = CODECS.build("wan", path=str(tiny_wan_vae_dir))

    system = System()
    assert sorted(system.state_dict()) == ["net.bias", "net.weight"]
    assert len(list(system.parameters())) == 2
    system.load_state_dict(System().state_dict())                              # strict loading still works
    system.double()
    assert system.codec.vae.dtype == torch.float64 and system.codec.mean.dtype == torch.float64
    with torch.no_grad():
        assert system.codec.encode(torch.zeros(1, 1, 3, 8, 8, dtype=torch.float64)).dtype == torch.float32


def test_wrong_frame_counts_name_the_rule(tiny_wan_vae_dir):
    codec = CODECS.build("wan", path=str(tiny_wan_vae_dir))
    with pytest.raises(ValueError, match=r"frames=8 does not fit the 1 \+ 4k rule .* use 5 or 9 frames"):
        codec.encode(torch.zeros(1, 8, 3, 8, 8))
    stream = codec.stream()
    with pytest.raises(ValueError, match=r"encode_chunk got 2 frames after 0: .*1 \+ 4k rule.*1 \+ 4k frames"):
        stream.encode_chunk(torch.zeros(1, 2, 3, 8, 8))
    with torch.no_grad():
        stream.encode_chunk(torch.zeros(1, 1, 3, 8, 8))
    with pytest.raises(ValueError, match=r"got 3 frames after 1: .*needs 4k frames \(4, 8, \.\.\.\)"):
        stream.encode_chunk(torch.zeros(1, 3, 3, 8, 8))
    with pytest.raises(ValueError, match="does not continue this stream"):
        stream.encode_chunk(torch.zeros(1, 4, 3, 16, 8))
    with pytest.raises(ValueError, match="not divisible by the codec's spatial factor 8"):
        codec.encode(torch.zeros(1, 5, 3, 12, 8))


def test_bad_paths_and_files_say_what_to_pass(tmp_path, tiny_wan_vae_dir):
    with pytest.raises(FileNotFoundError, match=r"path='.*nowhere' does not exist; pass the Wan VAE as a diffusers"):
        WanCodec(str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="folder without config.json"):
        WanCodec(str(tmp_path))
    save_file({"weight": torch.zeros(2)}, tmp_path / "other.safetensors")
    with pytest.raises(ValueError, match="is not a Wan VAE checkpoint"):
        WanCodec(str(tmp_path / "other.safetensors"))
    (tmp_path / "cut.pth").write_bytes(b"PK\x03\x04 not really a checkpoint")
    with pytest.raises(ValueError, match="cannot read .*cut.pth as a weights-only torch checkpoint"):
        WanCodec(str(tmp_path / "cut.pth"))
    vae = CODECS.build("wan", path=str(tiny_wan_vae_dir)).vae
    save_file(vae.state_dict(), tmp_path / "whole.safetensors")
    (tmp_path / "cut.safetensors").write_bytes((tmp_path / "whole.safetensors").read_bytes()[:5000])
    with pytest.raises(ValueError, match="cannot read .*cut.safetensors as a safetensors file"):
        WanCodec(str(tmp_path / "cut.safetensors"))
    save_file({**vae.state_dict(), "decoder.extra.weight": torch.zeros(1)}, tmp_path / "extra.safetensors")
    with pytest.raises(ValueError, match="does not hold Wan2.1's VAE: 'decoder.extra.weight' is not a key"):
        WanCodec(str(tmp_path / "extra.safetensors"))
    state = _original_state(vae)
    torch.save({k: v for k, v in state.items() if not k.startswith("decoder.head.2")}, tmp_path / "no_head.pth")
    with pytest.raises(ValueError, match="does not hold Wan2.1's VAE: it has no 'decoder.head.2.weight'"):
        WanCodec(str(tmp_path / "no_head.pth"))
    state["decoder.head.0.gamma"] = torch.ones(5, 1, 1)
    torch.save(state, tmp_path / "bad_shape.pth")
    with pytest.raises(ValueError, match=r"decoder.head.0.gamma: shape \(5, 1, 1\), the architecture needs"):
        WanCodec(str(tmp_path / "bad_shape.pth"))
    del state["decoder.head.0.gamma"]
    torch.save(state, tmp_path / "missing.pth")
    with pytest.raises(ValueError, match=r"missing \['decoder.head.0.gamma'\]"):
        WanCodec(str(tmp_path / "missing.pth"))
    with pytest.raises(ValueError, match="dtype='int8' is unknown"):
        WanCodec(str(tiny_wan_vae_dir), dtype="int8")
