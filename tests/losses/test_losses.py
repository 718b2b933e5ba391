"""flow_matching_loss and ode_regression_loss against hand-computed values on toy denoisers."""
import pytest
import torch

from realcam.losses import flow_matching_loss, ode_regression_loss
from realcam.modules.flow import FlowSchedule, flow_from_x0


def frames(*values):
    """A [1, F, 1, 1, 1] latent with one value per frame."""
    return torch.tensor(values, dtype=torch.float32).reshape(1, -1, 1, 1, 1)


def constant_flow(value):
    def student(x, sigma, cond):
        assert sigma.shape == x.shape[:2]  # the denoiser protocol's [B, F]
        return torch.full_like(x, value)

    return student


# ---- flow matching --------------------------------------------------------------------------------
def twice_x(x, sigma, cond):
    assert sigma.shape == x.shape[:2]
    return 2 * x


def test_flow_matching_hand_computed():
    sched = FlowSchedule(shift=5.0)  # the shift only matters for drawing sigmas, not for the loss
    x0, noise, sigma = frames(1.0, 0.0), frames(3.0, 2.0), torch.tensor([[0.25, 0.5]])
    # x = (1 - sigma) x0 + sigma eps = [1.5, 1.0]; v = eps - x0 = [2, 2]; prediction 2x = [3, 2]
    loss = flow_matching_loss(twice_x, x0, None, sched, sigma, noise)
    assert loss.item() == pytest.approx(0.5)
    assert flow_matching_loss(twice_x, x0, None, sched, sigma, noise, mask=torch.tensor([[1.0, 0.0]])).item() \
        == pytest.approx(1.0)
    assert flow_matching_loss(twice_x, x0, None, sched, sigma, noise, mask=torch.tensor([[False, True]])).item() \
        == pytest.approx(0.0)
    weighted = flow_matching_loss(twice_x, x0, None, sched, sigma, noise, mask=torch.tensor([[0.5, 1.0]]))
    assert weighted.item() == pytest.approx(0.5 / 1.5)  # sum w mse / sum w
    assert flow_matching_loss(twice_x, x0, None, sched, sigma, noise, mask=torch.zeros(1, 2)).item() == 0.0


def test_flow_matching_scalar_sigma_reaches_denoiser_as_frames_and_trains_it():
    scale = torch.nn.Parameter(torch.tensor(1.0))
    seen = {}

    def denoiser(x, sigma, cond):
        seen["sigma"], seen["cond"] = sigma, cond
        return scale * x

    x0, noise = torch.randn(2, 3, 1, 2, 2), torch.randn(2, 3, 1, 2, 2)
    loss = flow_matching_loss(denoiser, x0, "cam", FlowSchedule(), 0.5, noise)
    loss.backward()
    assert seen["sigma"].shape == (2, 3) and torch.all(seen["sigma"] == 0.5) and seen["cond"] == "cam"
    x = 0.5 * x0 + 0.5 * noise
    torch.testing.assert_close(loss, ((x - (noise - x0)) ** 2).mean())
    assert scale.grad is not None and scale.grad != 0


def test_x0_weighting_is_the_mse_of_the_implied_x0():
    sched = FlowSchedule()
    x0, noise, sigma = frames(1.0, 0.0), frames(3.0, 2.0), torch.tensor([[0.25, 0.5]])
    # flow errors [1, 0] (hand example above) times sigma^2 -> [0.0625, 0]; the implied x0 = x - sigma v
    loss = flow_matching_loss(twice_x, x0, None, sched, sigma, noise, weighting="x0")
    assert loss.item() == pytest.approx(0.0625 / 2)
    x = (1 - sigma.view(1, 2, 1, 1, 1)) * x0 + sigma.view(1, 2, 1, 1, 1) * noise
    implied = x - sigma.view(1, 2, 1, 1, 1) * twice_x(x, sigma, None)
    torch.testing.assert_close(loss, ((implied - x0) ** 2).mean())
    masked = flow_matching_loss(twice_x, x0, None, sched, sigma, noise, mask=torch.tensor([[1.0, 0.0]]), weighting="x0")
    assert masked.item() == pytest.approx(0.0625)
    with pytest.raises(ValueError, match="weighting='snr'"):
        flow_matching_loss(twice_x, x0, None, sched, sigma, noise, weighting="snr")


def test_flow_matching_rejects_bad_mask_and_noise():
    x0 = torch.zeros(2, 3, 1, 2, 2)
    with pytest.raises(ValueError, match=r"mask of shape \(2,\) must be per frame"):
        flow_matching_loss(twice_x, x0, None, FlowSchedule(), 0.5, x0, mask=torch.ones(2))
    with pytest.raises(ValueError, match="noise"):
        flow_matching_loss(twice_x, x0, None, FlowSchedule(), 0.5, x0[:1])


# ---- ODE regression -------------------------------------------------------------------------------
def test_ode_regression_hand_computed():
    x_t, target = frames(0.5, 2.0, -1.0), frames(0.3, 0.0, -1.0)
    sigma = torch.tensor([[0.5, 0.0, 0.25]])
    # x0 = x_t - sigma * 1 = [0.0, (2.0, clean), -1.25]; squared errors on noisy frames [0.09, 0.0625]
    loss = ode_regression_loss(constant_flow(1.0), x_t, sigma, None, target)
    assert loss.item() == pytest.approx((0.09 + 0.0625) / 2)
    masked = ode_regression_loss(constant_flow(1.0), x_t, sigma, None, target, mask=torch.tensor([[1, 1, 0]]))
    assert masked.item() == pytest.approx(0.09)


def test_ode_regression_zero_for_exact_student_and_ignores_clean_frames():
    g = torch.Generator().manual_seed(1)
    x_t, target = torch.randn(2, 4, 2, 2, 2, generator=g), torch.randn(2, 4, 2, 2, 2, generator=g)
    sigma = FlowSchedule(shift=5.0).student_sigmas()[torch.tensor([[0, 3, 1, 2], [2, 1, 0, 3]])]
    sigma[0, 1] = sigma[1, 2] = 0.0  # clean frames (source-like): x0 estimate is x_t, far from target

    def exact(x, s, cond):
        return flow_from_x0(x, target, s)

    assert ode_regression_loss(exact, x_t, sigma, None, target).item() < 1e-12
    base = ode_regression_loss(constant_flow(0.3), x_t, sigma, None, target)
    x_t2, target2 = x_t.clone(), target.clone()
    x_t2[0, 1] += 5.0
    target2[1, 2] -= 7.0
    torch.testing.assert_close(ode_regression_loss(constant_flow(0.3), x_t2, sigma, None, target2), base)


def test_ode_regression_trains_student_and_survives_all_clean():
    weight = torch.nn.Parameter(torch.tensor(0.5))

    def student(x, sigma, cond):
        return weight * x

    x_t, target = torch.randn(1, 2, 1, 2, 2), torch.randn(1, 2, 1, 2, 2)
    ode_regression_loss(student, x_t, torch.tensor([[0.7, 0.4]]), None, target).backward()
    assert weight.grad is not None and weight.grad != 0
    weight.grad = None
    clean = ode_regression_loss(student, x_t, torch.zeros(1, 2), None, target)
    clean.backward()
    assert clean.item() == 0.0 and weight.grad.item() == 0.0
    with pytest.raises(ValueError, match="x0_target"):
        ode_regression_loss(student, x_t, 0.5, None, target[:, :1])
