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
    sampled, inside = module.features(source, torch.eye(4).expand(B, F, 4, 4), intrinsics(), intrinsics(), IMAGE)
    assert sampled.shape == (B, F, 3, C, h, w) and inside.shape == (B, F, 3, h, w)
    for d in range(3):
        torch.testing.assert_close(sampled[:, :, d], source, atol=1e-5, rtol=0)
    assert bool(inside.all())


@pytest.mark.parametrize("depth", [2.0, 5.0])
def test_sideways_step_shifts_by_the_disparity_of_that_depth(depth):
    # Target camera 0.4 m to the right of the source: a point at depth d seen at target pixel u is at
    # u + fx * 0.4 / d in the source. On a horizontal ramp, bilinear sampling is exact.
    c2w = torch.eye(4).repeat(B, F, 1, 1)
    c2w[..., 0, 3] = 0.4
    K = intrinsics()
    ramp = torch.arange(w, dtype=torch.float32).expand(B, F, 1, h, w).contiguous()
    module = SourceReprojection(16, 1, (1, 2, 2), [depth])
    sampled, inside = module.features(ramp, c2w, K, K, IMAGE)
    shift = float(K[0, 0, 0, 0]) * 0.4 / depth / (IMAGE[1] / w)       # in latent pixels
    cols = int(w - shift - 1)                                          # fully inside the source image
    torch.testing.assert_close(sampled[:, :, 0, 0, :, :cols], ramp[..., 0, :, :cols] + shift, atol=1e-4, rtol=0)
    assert bool(inside[:, :, 0, :, :cols].all()) and not bool(inside[:, :, 0, :, -1].any())


def test_space_to_depth_samples_whole_pixels_on_the_fine_grid():
    # Pixel-codec latents (factor 2) of a random image; a sideways step of b at depth d moves content by
    # fx * b / d image pixels, here exactly one fine pixel. Sampling the unfolded grid reproduces the shifted
    # image exactly; sampling the latents directly lands half-way between 2-pixel cells and blurs.
    f, depth = 2, 3.0
    H, W = h * f, w * f
    image = torch.randn(B, F, 1, H, W)
    latents = torch.nn.functional.pixel_unshuffle(image.flatten(0, 1), f).unflatten(0, (B, F))
    K = intrinsics()
    c2w = torch.eye(4).repeat(B, F, 1, 1)
    c2w[..., 0, 3] = depth * (IMAGE[1] / W) / float(K[0, 0, 0, 0])       # one fine pixel of disparity
    sampled, inside = SourceReprojection(16, 4, (1, 2, 2), [depth], space_to_depth=f).features(
        latents, c2w, K, K, IMAGE)
    assert sampled.shape == (B, F, 1, 1, H, W) and inside.shape == (B, F, 1, H, W)
    torch.testing.assert_close(sampled[:, :, 0, 0, :, :-1], image[:, :, 0, :, 1:], atol=1e-4, rtol=0)
    assert bool(inside[..., :-1].all()) and not bool(inside[..., -1].any())
    coarse, _ = SourceReprojection(16, 4, (1, 2, 2), [depth]).features(latents, c2w, K, K, IMAGE)
    coarse = torch.nn.functional.pixel_shuffle(coarse[:, :, 0].flatten(0, 1), f).unflatten(0, (B, F))
    assert (coarse[:, :, 0, :, :-2] - image[:, :, 0, :, 1:-1]).abs().mean() > 0.3


def test_space_to_depth_must_divide_the_channels():
    with pytest.raises(ValueError, match="reproject_space_to_depth"):
        SourceReprojection(16, 6, (1, 2, 2), [2.0], space_to_depth=2)


def test_blend_copies_the_chosen_depth_and_regenerates_outside_the_view():
    f, D = 2, 2
    module = SourceReprojection(16, 4, (1, 2, 2), [2.0, 8.0], space_to_depth=f)
    c2w = torch.eye(4).repeat(B, F, 1, 1)
    c2w[..., 0, 3] = 0.5
    source, generated = torch.randn(B, F, 4, h, w), torch.randn(B, F, 4, h, w)
    _, warp = module(source, c2w, intrinsics(), intrinsics(), IMAGE)
    sampled, inside = warp
    logits = torch.zeros(B, F, D + 1, f * f, h, w)
    logits[:, :, 1] = 30.0                                  # choose the far depth wherever it is valid
    out = module.blend(generated, logits.flatten(2, 3), warp)
    fold = lambda t: torch.nn.functional.pixel_unshuffle(t.flatten(0, 1), f).unflatten(0, (B, F))  # noqa: E731
    valid = fold(inside[:, :, 1, None].float().expand(-1, -1, 1, -1, -1)).bool().repeat_interleave(1, 2)
    expect = torch.where(valid, fold(sampled[:, :, 1]), generated)      # outside the view: the generated x0
    assert 0 < int(valid.sum()) < valid.numel()
    torch.testing.assert_close(out, expect, atol=1e-5, rtol=0)
    # equal logits: the mean of the generated x0 and every valid sample
    even = module.blend(generated, torch.zeros(B, F, (D + 1) * f * f, h, w), warp)
    fine = lambda t: torch.nn.functional.pixel_shuffle(t.flatten(0, 1), f).unflatten(0, (B, F))  # noqa: E731
    count = 1 + inside.sum(2, keepdim=True)
    mean = (fine(generated)[:, :, None] + (sampled * inside[:, :, :, None]).sum(2, keepdim=True)) / count[:, :, :, None]
    torch.testing.assert_close(even, fold(mean[:, :, 0]), atol=1e-5, rtol=0)


def test_backbone_blend_copies_the_source_through_an_identity_camera():
    """With the target camera at the source and the blend head pushed to a depth, x0 is the source itself, so
    the returned flow is exactly (x - source) / sigma; with the camera dropped the blend falls back to the
    network's own x0."""
    torch.manual_seed(0)
    net = CrossFrameDiT(in_channels=C, dim=16, depth=1, heads=2, ffn_dim=32, freq_dim=16, prediction="x0",
                        reproject_depths=[3.0], reproject_space_to_depth=2, reproject_blend=True)
    with torch.no_grad():
        net.blend_head.bias.view(2, -1)[0] = 40.0     # channels (depth, generated) x sub-pixel, then patch pixel
    x, sigma = torch.randn(B, F, C, h, w), torch.rand(B, F) * 0.8 + 0.2
    cond = Cond(source=torch.randn(B, F, C, h, w), target_c2w=torch.eye(4).repeat(B, F, 1, 1),
                target_K=intrinsics(), image_size=IMAGE)
    with torch.no_grad():
        torch.testing.assert_close(net(x, sigma, cond), (x - cond.source) / sigma[:, :, None, None, None],
                                   atol=1e-4, rtol=1e-4)
        dropped = net(x, sigma, cond.without_camera())
        plain = (x - dropped * sigma[:, :, None, None, None])          # the network's own x0, not the source
        assert (plain - cond.source).abs().max() > 0.1


def test_blend_needs_reprojection_and_x0():
    with pytest.raises(ValueError, match="reproject_blend"):
        CrossFrameDiT(in_channels=C, dim=16, depth=1, heads=2, ffn_dim=32, reproject_blend=True, prediction="x0")
    with pytest.raises(ValueError, match="reproject_blend"):
        CrossFrameDiT(in_channels=C, dim=16, depth=1, heads=2, ffn_dim=32, reproject_blend=True,
                      reproject_depths=[2.0], prediction="flow")


def test_points_behind_the_source_camera_are_flagged_and_zero():
    c2w = torch.eye(4).repeat(B, F, 1, 1)
    c2w[..., 2, 3] = -10.0          # the target sits 10 m behind the source: depth 2 lands behind it
    grid, front = reproject_grid(c2w, intrinsics(), intrinsics(), IMAGE, (h, w), torch.tensor([2.0, 20.0]))
    assert not bool(front[:, :, 0].any()) and bool(front[:, :, 1].all())
    module = SourceReprojection(16, C, (1, 2, 2), [2.0])
    sampled, inside = module.features(torch.randn(B, F, C, h, w), c2w, intrinsics(), intrinsics(), IMAGE)
    assert bool((sampled == 0).all()) and not bool(inside.any())


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


def test_a_kept_camera_gives_the_same_output_as_no_keep_flag():
    """Training passes camera_keep (dropout), inference passes none: with the camera kept they must agree,
    samples straddling the image border included."""
    torch.manual_seed(0)
    net = CrossFrameDiT(in_channels=C, dim=16, depth=1, heads=2, ffn_dim=32, freq_dim=16, prediction="x0",
                        reproject_depths=[1.5, 4.0], reproject_space_to_depth=2, reproject_blend=True)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    x, sigma = torch.randn(B, F, C, h, w), torch.rand(B, F)
    c2w = torch.eye(4).repeat(B, F, 1, 1)
    # a sideways step of 2.7 fine pixels at depth 1.5: the last column samples 0.2 px past the image edge,
    # where bilinear sampling still reads the border pixel but the sample counts as outside
    c2w[..., 0, 3] = 2.7 * 1.5 * (IMAGE[1] / (2 * w)) / float(intrinsics()[0, 0, 0, 0])
    cond = Cond(source=torch.randn(B, F, C, h, w), target_c2w=c2w, target_K=intrinsics(), image_size=IMAGE)
    kept = Cond(**{**cond.__dict__, "camera_keep": torch.ones(B)})
    with torch.no_grad():
        torch.testing.assert_close(net(x, sigma, kept), net(x, sigma, cond), atol=1e-6, rtol=0)


# ------------------------------------------------------------------------------------------ the copy gate
def _gate_case(c2w: torch.Tensor, gate: float, seed: int = 0):
    """A blend whose logits strongly prefer the generated x0, with and without the copy gate."""
    g = torch.Generator().manual_seed(seed)
    f, depths = 2, [2.0, 4.0, 9.0]
    source, generated = torch.randn(B, F, 4, h, w, generator=g), torch.randn(B, F, 4, h, w, generator=g)
    logits = torch.randn(B, F, (len(depths) + 1) * f * f, h, w, generator=g)
    logits.view(B, F, len(depths) + 1, f * f, h, w)[:, :, -1] += 8.0
    gated = SourceReprojection(16, 4, (1, 2, 2), depths, space_to_depth=f, copy_gate=gate)
    plain = SourceReprojection(16, 4, (1, 2, 2), depths, space_to_depth=f)
    _, warp = plain(source, c2w, intrinsics(), intrinsics(), IMAGE)
    return source, gated.blend(generated, logits, warp), plain.blend(generated, logits, warp), gated, warp


def test_copy_gate_copies_the_source_exactly_at_the_identity():
    source, gated, plain, _, _ = _gate_case(torch.eye(4).repeat(B, F, 1, 1), gate=0.05)
    torch.testing.assert_close(gated, source, atol=1e-5, rtol=0)        # whatever the logits prefer
    assert (plain - source).abs().max() > 0.5                            # the plain blend keeps the generated x0


def test_copy_gate_copies_a_pure_rotation_and_leaves_parallax_to_the_blend():
    c2w = torch.eye(4).repeat(B, F, 1, 1)
    c2w[..., :3, :3] = geometry.so3_exp(torch.tensor([0.0, 0.12, 0.0]))        # a 7-degree pan: no parallax
    _, gated, plain, module, warp = _gate_case(c2w, gate=0.05)
    sampled, inside = warp
    weight = module.copy_weight(warp)
    everywhere = inside.all(2)
    assert 0 < int(everywhere.sum()) < everywhere.numel() and bool((weight[everywhere] > 0.99).all())
    fine = module.fine(gated)
    torch.testing.assert_close(fine.permute(0, 1, 3, 4, 2)[everywhere], sampled[:, :, 0].permute(0, 1, 3, 4, 2)[
        everywhere], atol=1e-4, rtol=0)                                          # copied where every depth is in view
    torch.testing.assert_close(fine.permute(0, 1, 3, 4, 2)[~everywhere],
                               module.fine(plain).permute(0, 1, 3, 4, 2)[~everywhere], atol=1e-6, rtol=0)
    c2w[..., 0, 3] = 0.5                                                         # now with a sideways step
    _, gated, plain, module, warp = _gate_case(c2w, gate=0.05)
    weight = module.copy_weight(warp)
    assert float((weight == 0).float().mean()) > 0.5                             # random texture: the depths disagree
    off = (weight == 0)[:, :, None].expand(-1, -1, 1, -1, -1)
    torch.testing.assert_close(module.fine(gated)[off.expand_as(module.fine(gated))],
                               module.fine(plain)[off.expand_as(module.fine(plain))], atol=1e-6, rtol=0)


def test_backbone_copy_gate_returns_the_source_at_the_identity_and_checks_its_value():
    torch.manual_seed(0)
    kw = dict(in_channels=C, dim=16, depth=1, heads=2, ffn_dim=32, freq_dim=16, prediction="x0",
              reproject_depths=[2.0, 6.0], reproject_space_to_depth=2, reproject_blend=True)
    net = CrossFrameDiT(**kw, reproject_copy_gate=0.1)
    x, sigma = torch.randn(B, F, C, h, w), torch.rand(B, F) * 0.8 + 0.2
    cond = Cond(source=torch.randn(B, F, C, h, w), target_c2w=torch.eye(4).repeat(B, F, 1, 1),
                target_K=intrinsics(), image_size=IMAGE)
    with torch.no_grad():     # the zero-initialized blend head weighs the generated x0 like a depth; the gate does not
        torch.testing.assert_close(net(x, sigma, cond), (x - cond.source) / sigma[:, :, None, None, None],
                                   atol=1e-4, rtol=1e-4)
        ungated = CrossFrameDiT(**kw)
        ungated.load_state_dict(net.state_dict())
        assert (ungated(x, sigma, cond) - net(x, sigma, cond)).abs().max() > 0.1
    with pytest.raises(ValueError, match="reproject_copy_gate"):
        CrossFrameDiT(**{**kw, "reproject_blend": False}, reproject_copy_gate=0.1)
    with pytest.raises(ValueError, match="reproject_copy_gate=-1"):
        CrossFrameDiT(**kw, reproject_copy_gate=-1.0)
