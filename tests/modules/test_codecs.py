"""Every registered codec: shapes, reconstruction against a reference, and chunked streaming == offline."""
import pytest
import torch

from realcam.modules.codecs import LatentCodec
from realcam.registry import CODECS


def _diffusers_roundtrip(codec, video):
    """diffusers' own offline encode (posterior mean) and decode of the same VAE: what the wan codec must give."""
    vae = codec.vae
    return vae.decode(vae.encode(video.transpose(1, 2)).latent_dist.mode()).sample.transpose(1, 2)


# name -> (init args from the test's fixtures, reference reconstruction, tolerance). A registered codec without an
# entry is built with no arguments and must reconstruct its input to 0.05 (a plugin's lossy codec adds its entry).
CASES = {
    "pixel": (lambda request: {"factor": 2}, lambda codec, video: video, 0.0),
    "wan": (lambda request: {"path": str(request.getfixturevalue("tiny_wan_vae_dir"))}, _diffusers_roundtrip, 1e-5),
}


def build_case(name, request):
    make_args, reference, tol = CASES.get(name, (lambda request: {}, lambda codec, video: video, 0.05))
    return CODECS.build(name, **make_args(request)), reference, tol


def check_reconstruction(codec, reference, tol, video):
    """decode(encode(video)) equals the reference to ``tol``; the reference is far from zero, so a codec that
    returns zeros (or ignores its input) fails."""
    expected = reference(codec, video)
    assert expected.abs().mean() > 0.05, "degenerate reference: it would not catch a codec returning zeros"
    err = (codec.decode(codec.encode(video)) - expected).abs().max().item()
    assert err <= tol, f"{type(codec).__name__}: reconstruction differs from the reference by {err:.3g} > {tol}"


def check_stream(codec, video, first, rest):
    """Chunk-by-chunk coding through codec.stream() equals the offline calls: encode in chunks of ``first`` then
    ``rest`` frames, decode one latent frame at a time and in two parts."""
    latents = codec.encode(video)
    stream = codec.stream()
    chunks = [video[:, :first]] + list(video[:, first:].split(rest, dim=1))
    chunked = torch.cat([stream.encode_chunk(c) for c in chunks], dim=1)
    assert chunked.shape == latents.shape
    assert (chunked - latents).abs().max() <= 1e-5
    decoded = codec.decode(latents)
    one_by_one = torch.cat([stream.decode_chunk(latents[:, i:i + 1]) for i in range(latents.shape[1])], dim=1)
    two_parts = codec.stream()
    halves = torch.cat([two_parts.decode_chunk(latents[:, :1]), two_parts.decode_chunk(latents[:, 1:])], dim=1)
    for got in (one_by_one, halves):
        assert got.shape == decoded.shape == video.shape
        assert (got - decoded).abs().max() <= 1e-5


@pytest.mark.parametrize("name", CODECS.list())
def test_codec_contract(name, request, one_thread):
    codec, reference, tol = build_case(name, request)
    assert isinstance(codec, LatentCodec)
    f, T = codec.spatial_factor, codec.video_frames(3)
    video = torch.rand(2, T, 3, 2 * f, f, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.no_grad():
        latents = codec.encode(video)
        assert latents.shape == (2, *codec.latent_shape(T, 2 * f, f))
        assert codec.latent_frames(T) == 3 and codec.decode(latents).shape == video.shape
        check_reconstruction(codec, reference, tol, video)
        check_stream(codec, video, first=codec.video_frames(1), rest=2 * codec.temporal_factor)


def test_contract_catches_a_codec_returning_zeros():
    class Zeros(LatentCodec):
        latent_channels, spatial_factor, temporal_factor = 12, 2, 1

        def encode(self, video):
            return video.new_zeros(video.shape[0], video.shape[1], 12, video.shape[3] // 2, video.shape[4] // 2)

        def decode(self, latents):
            return latents.new_zeros(latents.shape[0], latents.shape[1], 3, latents.shape[3] * 2, latents.shape[4] * 2)

    video = torch.rand(1, 2, 3, 8, 8) * 2 - 1
    with pytest.raises(AssertionError, match="reconstruction differs"):
        check_reconstruction(Zeros(), CASES["pixel"][1], 0.0, video)


def test_pixel_codec_is_lossless_and_local():
    codec = CODECS.build("pixel", factor=4)
    video = torch.rand(1, 2, 3, 16, 8)
    latents = codec.encode(video)
    assert latents.shape == (1, 2, 48, 4, 2)
    assert torch.equal(codec.decode(latents), video)
    # latent pixel (0, 0) holds exactly the top-left 4x4 block of each colour channel
    assert torch.equal(latents[0, 0, :16, 0, 0], video[0, 0, 0, :4, :4].reshape(-1))


def test_codec_rejects_indivisible_size():
    with pytest.raises(ValueError, match="not divisible by the codec's spatial factor 4"):
        CODECS.build("pixel", factor=4).encode(torch.zeros(1, 1, 3, 10, 8))


def test_codecs_doc_streaming_example_runs(tiny_wan_vae_dir, capsys):
    """docs/codecs.md's streaming example, on the tiny VAE: its assertion holds and it prints what it says."""
    import re
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "codecs.md").read_text()
    code = re.findall(r"```python\n(.*?)```", doc, re.S)[0].replace("PATH/TO/Wan2.1-T2V-1.3B", str(tiny_wan_vae_dir))
    exec(code, {})
    assert capsys.readouterr().out.strip() == "torch.Size([1, 3, 16, 4, 4]) [1, 4, 4]"
