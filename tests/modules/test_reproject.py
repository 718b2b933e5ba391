"""Plane-sweep source reprojection: the geometry against closed forms, and its place in the backbone."""
import pytest
import torch

from realcam import geometry
from realcam.modules.backbone import CrossFrameDiT
from realcam.modules.cond import Cond
from realcam.modules.reproject import SourceReprojection, reproject_grid

B, F, C, h, w = 2, 3, 4, 8, 8
IMAGE = (32, 32)


def intrinsics():
    return geometry.fov_intrinsics(*IMAGE, 60.0).expand(B, F, 3, 3)


def test_identity_camera_samples_the_source_itself_at_every_depth():
    source = torch.randn(B, F, C, h, w)
    module = SourceReprojection(16, C, (1, 2, 2), [0.5, 2.0, 9.0])
    feats = module.features(source, torch.eye(4).expand(B, F, 4, 4), intrinsics(), intrinsics(), IMAGE)
    assert feats.shape == (B, F, 3, C + 1, h, w)
    for d in range(3):
        torch.testing.assert_close(feats[:, :, d, :C], source, atol=1e-5, rtol=0)
    assert bool((feats[:, :, :, C] == 1).all())


@pytest.mark.parametrize("depth", [2.0, 5.0])
def test_sideways_step_shifts_by_the_disparity_of_that_depth(depth):
    # Target camera 0.4 m to the right of the source: a point at depth d seen at target pixel u is at
    # u + fx * 0.4 / d in the source. On a horizontal ramp, bilinear sampling is exact.
    c2w = torch.eye(4).repeat(B, F, 1, 1)
    c2w[..., 0, 3] = 0.4
    K = intrinsics()
    ramp = torch.arange(w, dtype=torch.float32).expand(B, F, 1, h, w).contiguous()
    module = SourceReprojection(16, 1, (1, 2, 2), [depth])
    feats = module.features(ramp, c2w, K, K, IMAGE)[:, :, 0]
    shift = float(K[0, 0, 0, 0]) * 0.4 / depth / (IMAGE[1] / w)       # in latent pixels
    cols = int(w - shift - 1)                                          # fully inside the source image
    torch.testing.assert_close(feats[..., 0, :, :cols], ramp[..., 0, :, :cols] + shift, atol=1e-4, rtol=0)
    assert bool((feats[..., 1, :, :cols] == 1).all()) and bool((feats[..., 1, :, -1] == 0).all())


def test_points_behind_the_source_camera_are_flagged_and_zero():
    c2w = torch.eye(4).repeat(B, F, 1, 1)
    c2w[..., 2, 3] = -10.0          # the target sits 10 m behind the source: depth 2 lands behind it
    grid, front = reproject_grid(c2w, intrinsics(), intrinsics(), IMAGE, (h, w), torch.tensor([2.0, 20.0]))
    assert not bool(front[:, :, 0].any()) and bool(front[:, :, 1].all())
    module = SourceReprojection(16, C, (1, 2, 2), [2.0])
    feats = module.features(torch.randn(B, F, C, h, w), c2w, intrinsics(), intrinsics(), IMAGE)
    assert bool((feats == 0).all())


def test_bad_depths_are_named():
    for bad in ([], [0.0], [float("inf")], [-1.0]):
        with pytest.raises(ValueError, match="reproject_depths"):
            SourceReprojection(16, C, (1, 2, 2), bad)


def test_backbone_term_starts_at_zero_follows_the_camera_and_drops_with_it():
    torch.manual_seed(0)
    kw = dict(in_channels=C, dim=16, depth=1, heads=2, ffn_dim=32, freq_dim=16, prediction="x0")
    plain, warped = CrossFrameDiT(**kw), CrossFrameDiT(**kw, reproject_depths=[2.0, 6.0])
    with torch.no_grad():
        for p in plain.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    warped.load_state_dict(plain.state_dict(), strict=False)     # the reprojection MLP keeps its zero output
    x, sigma = torch.randn(B, F, C, h, w), torch.rand(B, F)
    c2w = torch.eye(4).repeat(B, F, 1, 1)
    c2w[..., 0, 3] = 0.5
    cond = Cond(source=torch.randn(B, F, C, h, w), target_c2w=c2w, target_K=intrinsics(), image_size=IMAGE)
    torch.testing.assert_close(warped(x, sigma, cond), plain(x, sigma, cond))     # zero-initialized output
    with torch.no_grad():
        warped.reproject.mlp[-1].weight.normal_()
    out = warped(x, sigma, cond)
    assert not torch.allclose(out, plain(x, sigma, cond))
    out.square().mean().backward()
    assert warped.reproject.mlp[0].weight.grad.abs().sum() > 0
    # classifier-free guidance drops the camera, and with it the reprojection (it encodes the camera)
    with torch.no_grad():
        torch.testing.assert_close(warped(x, sigma, cond.without_camera()), plain(x, sigma, cond.without_camera()))
