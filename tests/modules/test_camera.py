import pytest
import torch

from realcam.modules.camera import BlockCameraEncoder, CameraEncoder
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
    per_block = CAMERA_ENCODERS.get(name).per_block
    enc = CAMERA_ENCODERS.build(name, dim=16, **({"depth": 3} if per_block else {}))
    assert isinstance(enc, CameraEncoder) and enc.dim == 16 and enc.per_block == per_block
    c2w, K, size = _cams()
    out = enc(c2w, K, size, (4, 6))
    if per_block:       # one embedding per block, per frame: [depth, B, F, 1, dim]
        assert isinstance(enc, BlockCameraEncoder) and out.shape == (3, 2, 3, 1, 16)
    else:
        assert out.shape[:2] == (2, 3) and out.shape[2] in (1, 24) and out.shape[3] == 16
    assert torch.count_nonzero(out) == 0, "camera encoders must start at zero (zero-initialized output)"
    attn_out = torch.randn(2, 5, 16)
    for i in range(enc.depth if per_block else 0):
        assert torch.equal(enc.project(i, attn_out), attn_out), "a per-block projector must start as the identity"
    # after perturbing the zero-initialized output layer, the embedding depends on the camera and backprops
    with torch.no_grad():
        for p in enc.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    out = enc(c2w, K, size, (4, 6))
    other = enc(c2w.flip(1), K, size, (4, 6))
    assert not torch.allclose(out, other)
    loss = out.square().mean()
    for i in range(enc.depth if per_block else 0):
        projected = enc.project(i, attn_out)
        assert not torch.allclose(projected, attn_out)
        loss = loss + projected.square().mean()
    loss.backward()
    assert all(p.grad is not None for p in enc.parameters())


def test_plucker_encoder_is_per_token_and_mlp_per_frame():
    c2w, K, size = _cams()
    assert CAMERA_ENCODERS.build("plucker", dim=8)(c2w, K, size, (4, 6)).shape == (2, 3, 24, 8)
    assert CAMERA_ENCODERS.build("extrinsics_mlp", dim=8)(c2w, K, size, (4, 6)).shape == (2, 3, 1, 8)


def test_recammaster_embeds_the_flattened_extrinsics_per_block():
    c2w, K, size = _cams()
    enc = CAMERA_ENCODERS.build("recammaster", dim=8, depth=2)
    with torch.no_grad():
        for p in enc.parameters():
            p.copy_(torch.randn_like(p))
    out = enc(c2w, K, size, (4, 6))
    for i in range(2):      # row-major [R | t], one Linear(12 -> dim) per block; the intrinsics play no part
        layer = enc.cam_encoder[i]
        expected = c2w[..., :3, :4].reshape(2, 3, 12) @ layer.weight.T + layer.bias
        torch.testing.assert_close(out[i, :, :, 0], expected)
    torch.testing.assert_close(enc(c2w, K * 2, size, (4, 6)), out)
