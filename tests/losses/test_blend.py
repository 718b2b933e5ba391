"""The blend-selection loss: its soft target picks the depth that reproduces the target, pixels with no
matching depth do not count, and minimizing it moves the backbone's blend onto that depth."""
import math

import pytest
import torch

from realcam import geometry
from realcam.losses import blend_selection_loss
from realcam.losses.blend import depth_choice_targets
from realcam.modules.backbone import CrossFrameDiT
from realcam.modules.cond import Cond

B, F, h, w, f = 2, 2, 8, 8, 2
IMAGE = (16, 16)


def test_soft_target_prefers_the_lowest_error_and_ignores_invalid_depths():
    inf = float("inf")
    errors = torch.tensor([[0.001, 0.011, inf], [0.5, 0.6, 0.7], [inf, inf, inf]]).T[..., None]   # [D=3, H=3, W=1]
    p, counted = depth_choice_targets(errors, temperature=0.005, max_error=0.02)
    assert counted[:, 0].tolist() == [True, False, False]          # best 0.001 counts; 0.5 and "none valid" do not
    torch.testing.assert_close(p[:, 0, 0].sum(), torch.tensor(1.0))
    assert p[2, 0, 0] == 0                                          # invalid depth gets nothing
    torch.testing.assert_close(p[1, 0, 0] / p[0, 0, 0], torch.tensor(math.exp(-0.01 / 0.005)))
    with pytest.raises(ValueError, match="blend_temperature"):
        depth_choice_targets(errors, temperature=0.0, max_error=0.02)


def scene(depth: float):
    """A random source image and the target seen 0.3 m to the right, with everything at ``depth``."""
    g = torch.Generator().manual_seed(0)
    H, W = h * f, w * f
    image = torch.rand(B, F, 3, H, W, generator=g) * 2 - 1
    K = geometry.fov_intrinsics(*IMAGE, 60.0).expand(B, F, 3, 3)
    c2w = torch.eye(4).repeat(B, F, 1, 1)
    c2w[..., 0, 3] = depth / float(K[0, 0, 0, 0])              # exactly one pixel of disparity at that depth
    target = torch.roll(image, -1, dims=-1)                     # target pixel u shows source pixel u + 1
    fold = lambda x: torch.nn.functional.pixel_unshuffle(x.flatten(0, 1), f).unflatten(0, (B, F))  # noqa: E731
    return fold(image), fold(target), Cond(source=fold(image), target_c2w=c2w, target_K=K, image_size=IMAGE)


def test_minimizing_it_moves_the_blend_onto_the_depth_that_reproduces_the_target():
    depths = [1.0, 3.0, 9.0]
    source, target, cond = scene(depth=3.0)
    net = CrossFrameDiT(in_channels=12, dim=32, depth=1, heads=2, ffn_dim=64, patch=(1, 2, 2), freq_dim=32,
                        prediction="x0", reproject_depths=depths, reproject_space_to_depth=f, reproject_blend=True)
    sigma = torch.full((B, F), 0.5)
    x = 0.5 * target + 0.5 * torch.randn(target.shape, generator=torch.Generator().manual_seed(1))
    opt = torch.optim.Adam([net.blend_head.bias], lr=0.1)      # the bias alone can pick one depth everywhere
    first = None
    for _ in range(30):
        with net.capture_blend() as captured:
            net(x, sigma, cond)
        assert len(captured) == 1
        loss = blend_selection_loss(net.reproject, *captured[0], target)
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.3 * first
    # the blend's weight over depths, on pixels that see the source at depth 3: that depth dominates
    logits, (sampled, inside) = captured[0]
    q = torch.softmax(net.reproject.depth_logits(logits.detach()).masked_fill(~inside, float("-inf")), dim=2)
    seen = inside.all(2)
    assert float(q[:, :, 1][seen].mean()) > 0.9
    assert net._blend_capture is None                           # the capture ends with its block


def test_pixels_without_a_valid_depth_give_finite_gradients_and_do_not_count():
    source, target, cond = scene(depth=3.0)
    cond.camera_keep = torch.tensor([1.0, 0.0])                 # second sample: camera dropped, nothing valid
    net = CrossFrameDiT(in_channels=12, dim=32, depth=1, heads=2, ffn_dim=64, patch=(1, 2, 2), freq_dim=32,
                        prediction="x0", reproject_depths=[1.0, 3.0], reproject_space_to_depth=f,
                        reproject_blend=True)
    with net.capture_blend() as captured:
        net(target, torch.full((B, F), 0.3), cond)
    logits, warp = captured[0]
    loss = blend_selection_loss(net.reproject, logits, warp, target)
    loss.backward()
    assert torch.isfinite(loss) and all(torch.isfinite(p.grad).all() for p in net.parameters() if p.grad is not None)
    only_kept = blend_selection_loss(net.reproject, logits[:1], (warp[0][:1], warp[1][:1]), target[:1])
    torch.testing.assert_close(loss, only_kept)                # the dropped sample adds nothing


def test_capture_does_not_nest():
    net = CrossFrameDiT(in_channels=12, dim=32, depth=1, heads=2, ffn_dim=64, patch=(1, 2, 2), freq_dim=32,
                        prediction="x0", reproject_depths=[2.0], reproject_space_to_depth=f, reproject_blend=True)
    with net.capture_blend():
        with pytest.raises(RuntimeError, match="already active"):
            with net.capture_blend():
                pass
