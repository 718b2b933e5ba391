import pytest
import torch

from realcam.modules.codecs import LatentCodec
from realcam.registry import CODECS


@pytest.mark.parametrize("name", CODECS.list())
def test_codec_contract(name):
    codec = CODECS.build(name)
    assert isinstance(codec, LatentCodec)
    f = codec.spatial_factor
    video = torch.rand(2, 3, 3, 4 * f, 2 * f) * 2 - 1
    latents = codec.encode(video)
    assert latents.shape == (2, *codec.latent_shape(3, 4 * f, 2 * f))
    assert codec.decode(latents).shape == video.shape


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
