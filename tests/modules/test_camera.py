import pytest
import torch

from realcam.modules.camera import CameraEncoder
from realcam.registry import CAMERA_ENCODERS


def _cams(B=2, F=3, H=32, W=48):
    c2w = torch.eye(4).repeat(B, F, 1, 1)
    c2w[..., :3, 3] = torch.randn(B, F, 3) * 0.3
    angle = torch.rand(B, F) * 0.5
    c, s = angle.cos(), angle.sin()
    c2w[..., 0, 0], c2w[..., 0, 2], c2w[..., 2, 0], c2w[..., 2, 2] = c, s, -s, c
    K = torch.tensor([[40.0, 0, W / 2], [0, 40.0, H / 2], [0, 0, 1]]).repeat(B, F, 1, 1)
    return c2w, K, (H, W)


@pytest.mark.parametrize("name", CAMERA_ENCODERS.list())
def test_encoder_contract(name):
    enc = CAMERA_ENCODERS.build(name, dim=16)
    assert isinstance(enc, CameraEncoder) and enc.dim == 16
    c2w, K, size = _cams()
    out = enc(c2w, K, size, (4, 6))
    assert out.shape[:2] == (2, 3) and out.shape[2] in (1, 24) and out.shape[3] == 16
    assert torch.count_nonzero(out) == 0, "camera encoders must start at zero (zero-initialized output)"
    # after perturbing the zero-initialized output layer, the embedding depends on the camera and backprops
    with torch.no_grad():
        for p in enc.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    out = enc(c2w, K, size, (4, 6))
    other = enc(c2w.flip(1), K, size, (4, 6))
    assert not torch.allclose(out, other)
    out.square().mean().backward()
    assert all(p.grad is not None for p in enc.parameters())


def test_plucker_encoder_is_per_token_and_mlp_per_frame():
    c2w, K, size = _cams()
    assert CAMERA_ENCODERS.build("plucker", dim=8)(c2w, K, size, (4, 6)).shape == (2, 3, 24, 8)
    assert CAMERA_ENCODERS.build("extrinsics_mlp", dim=8)(c2w, K, size, (4, 6)).shape == (2, 3, 1, 8)
