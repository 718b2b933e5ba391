"""DMD on a toy problem whose answer is known: Gaussians with analytic scores (DESIGN §2).

Under rectified flow x_sigma = (1 - sigma) x0 + sigma eps with data x0 ~ N(mu, std^2) per element,
x_sigma ~ N((1 - sigma) mu, (1 - sigma)^2 std^2 + sigma^2), and the optimal x0 predictor is the
posterior mean E[x0 | x_sigma] = mu + (1 - sigma) std^2 / var * (x_sigma - (1 - sigma) mu). The toy
denoisers return the flow of that x0, so the teacher ("real score") and the critic ("fake score") are
exact. Latents are [B, F, C, h, w] with one Gaussian per channel (C = 2: a 2-D Gaussian).
"""
import pytest
import torch

from realcam.losses import critic_loss, dmd_generator_loss, dmd_gradient, dmd_loss
from realcam.modules.flow import FlowSchedule, flow_from_x0

SHAPE = (16, 1, 2, 2, 2)  # [B, F, C, h, w]: 16 samples of 8 elements, 2 channels


def per_channel(v, like):
    return torch.as_tensor(v, dtype=torch.float64).reshape(1, 1, -1, 1, 1).to(like.device)


def posterior_x0(mu, std, x, sigma):
    """E[x0 | x_sigma] for x0 ~ N(mu, std^2) per channel; x [B, F, C, h, w], sigma [B, F]."""
    m, sd = per_channel(mu, x), per_channel(std, x)
    s = sigma.double()[..., None, None, None]
    var = (1 - s) ** 2 * sd ** 2 + s ** 2
    return m + (1 - s) * sd ** 2 / var * (x.double() - (1 - s) * m)


def gaussian_score(mu, std):
    """Denoiser with the exact flow of N(mu, std^2) data (mu, std: per channel, may carry a graph)."""

    def denoiser(x, sigma, cond):
        assert sigma.shape == x.shape[:2]
        return flow_from_x0(x, posterior_x0(mu, std, x, sigma).to(x.dtype), sigma)

    return denoiser


def gaussian_samples(mean, std, g, batch=SHAPE[0]):
    """Reparameterized generator x = mean + std z: its distribution is exactly N(mean, std^2)."""
    z = torch.randn(batch, *SHAPE[1:], generator=g, dtype=torch.float64)
    return per_channel(mean, z) + per_channel(std, z) * z


# ---- dmd_gradient and dmd_loss --------------------------------------------------------------------
def test_dmd_gradient_hand_computed_per_sample_normalizer():
    x = torch.tensor([[1.0, 3.0], [0.0, 0.0]]).reshape(2, 1, 1, 1, 2)
    real = torch.tensor([[0.0, 1.0], [1.0, -3.0]]).reshape(2, 1, 1, 1, 2)
    fake = torch.tensor([[2.0, 1.0], [4.0, -3.0]]).reshape(2, 1, 1, 1, 2)
    # sample 0: mean|x - real| = (1 + 2) / 2 = 1.5; sample 1: (1 + 3) / 2 = 2
    grad = dmd_gradient(x, real, fake)
    assert grad.dtype == torch.float64 and not grad.requires_grad
    torch.testing.assert_close(grad.reshape(2, 2), torch.tensor([[2 / 1.5, 0.0], [3 / 2, 0.0]], dtype=torch.float64))
    x2 = x.clone()
    x2[1] += 10.0  # another sample's normalizer must not leak into sample 0
    torch.testing.assert_close(dmd_gradient(x2, real, fake)[0], grad[0])


def test_dmd_gradient_is_invariant_to_the_scale_of_x_minus_real():
    g = torch.Generator().manual_seed(0)
    real, d, e = (torch.randn(3, 2, 2, 2, 2, generator=g, dtype=torch.float64) for _ in range(3))
    ref = dmd_gradient(real + d, real, real + e)
    for a in (1e-3, 7.0, 1e3):
        # x - real and fake - real scaled together (the data's scale): the step is unchanged
        torch.testing.assert_close(dmd_gradient(real + a * d, real, real + a * e), ref)
        torch.testing.assert_close(dmd_gradient(a * (real + d), a * real, a * (real + e)), ref)
        # only x - real scaled: the step shrinks by exactly 1 / a
        torch.testing.assert_close(dmd_gradient(real + a * d, real, real + e), ref / a)


def test_dmd_gradient_zero_denominator_gives_zero_not_nan_or_inf():
    x = torch.tensor([[1.0, 2.0], [0.0, 1.0]]).reshape(2, 1, 1, 1, 2)
    real = torch.tensor([[1.0, 2.0], [1.0, 1.0]]).reshape(2, 1, 1, 1, 2)  # sample 0: x == real exactly
    fake = torch.tensor([[1.0, 5.0], [3.0, 1.0]]).reshape(2, 1, 1, 1, 2)  # 0/0 and 3/0 in sample 0
    grad = dmd_gradient(x, real, fake)
    assert torch.isfinite(grad).all()
    assert torch.all(grad[0] == 0)
    torch.testing.assert_close(grad[1].flatten(), torch.tensor([2 / 0.5, 0.0], dtype=torch.float64))
    x = x.requires_grad_()
    loss = dmd_loss(x, real, fake)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(x.grad).all()


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_dmd_loss_gradient_equals_dmd_gradient(reduction):
    g = torch.Generator().manual_seed(2)
    x = torch.randn(3, 2, 2, 2, 2, generator=g, requires_grad=True)
    real, fake = torch.randn(2, *x.shape, generator=g)
    loss = dmd_loss(x, real, fake, reduction=reduction)
    loss.backward()
    grad = dmd_gradient(x, real, fake)
    n = x.numel() if reduction == "mean" else 1
    assert loss.dtype == torch.float64 and x.grad.dtype == torch.float32
    torch.testing.assert_close(x.grad.double() * n, grad, rtol=1e-6, atol=1e-6)
    assert loss.item() == pytest.approx(0.5 * grad.square().sum().item() / n)  # value: 0.5 mean|grad|^2
    with pytest.raises(ValueError, match="reduction"):
        dmd_loss(x, real, fake, reduction="none")


def test_dmd_loss_is_computed_in_float64():
    # x = 1e4 in float32 has a spacing of ~1e-3: a float32 surrogate would round x - grad back to x.
    x = torch.full((1, 1, 1, 1, 1), 1e4, requires_grad=True)
    real = torch.full((1, 1, 1, 1, 1), 9999.0, dtype=torch.float64)
    fake = real + 1e-4  # grad = 1e-4 / |x - real| = 1e-4
    loss = dmd_loss(x, real, fake, reduction="sum")
    assert loss.dtype == torch.float64
    assert loss.item() == pytest.approx(0.5 * 1e-8, rel=1e-6)
    loss.backward()
    assert x.grad.item() == pytest.approx(1e-4, rel=1e-6)


# ---- the generator step on Gaussians --------------------------------------------------------------
def test_step_moves_generator_toward_real_and_away_from_critic():
    mu_real, mu_fake, std = torch.tensor([1.0, 0.5]), torch.tensor([-1.0, -0.2]), 0.5
    theta = torch.zeros(2, dtype=torch.float64, requires_grad=True)  # generator mean, between the two
    g = torch.Generator().manual_seed(0)
    x = per_channel(theta, theta) + std * torch.randn(SHAPE, generator=g, dtype=torch.float64)
    loss, logs = dmd_generator_loss(x, gaussian_score(mu_real, std), gaussian_score(mu_fake, std), None, None,
                                    FlowSchedule(shift=3.0), 1.0, g)
    loss.backward()
    # With equal stds, fake - real = sigma^2 / var (mu_fake - mu_real) at every element: the per-element
    # gradient has the sign of mu_fake - mu_real, channel by channel, and descent goes the other way.
    assert torch.all(torch.sign(theta.grad) == torch.sign((mu_fake - mu_real).double()))
    new = theta.detach() - 0.1 * theta.grad
    step = new - theta.detach()
    cos = torch.nn.functional.cosine_similarity(step, (mu_real - mu_fake).double(), dim=0)
    assert cos > 0.999
    assert (new - mu_real).norm() < (theta - mu_real).norm()
    assert (new - mu_fake).norm() > (theta - mu_fake).norm()
    assert 0.02 <= logs["sigma_mean"] <= 0.98 and logs["grad_norm"] > 0
    # Swapping the roles of real and critic reverses the step.
    loss2, _ = dmd_generator_loss(x, gaussian_score(mu_fake, std), gaussian_score(mu_real, std), None, None,
                                  FlowSchedule(shift=3.0), 1.0, torch.Generator().manual_seed(0))
    assert torch.all(torch.sign(torch.autograd.grad(loss2, theta)[0]) == -torch.sign(theta.grad))


def test_gradient_vanishes_when_fake_equals_real():
    g = torch.Generator().manual_seed(3)
    x = gaussian_samples([0.3, -0.7], 0.8, g).float().requires_grad_()
    sched = FlowSchedule(shift=5.0)
    # the critic is a separate float32 network that happens to have learned the real distribution
    loss, logs = dmd_generator_loss(x, gaussian_score([0.3, -0.7], 0.8), gaussian_score([0.3, -0.7], 0.8),
                                    None, None, sched, 1.0, g)
    loss.backward()
    assert logs["grad_abs_mean"] < 1e-5 and x.grad.abs().max() < 1e-7
    _, off = dmd_generator_loss(x, gaussian_score([0.3, -0.7], 0.8), gaussian_score([0.4, -0.7], 0.8),
                                None, None, sched, 1.0, torch.Generator().manual_seed(3))
    assert off["grad_abs_mean"] > 1e-3  # the check above is not vacuous


def test_exact_critic_dmd_converges_to_real_mean_and_std():
    mu_real, std_real = torch.tensor([1.0, -0.5], dtype=torch.float64), 0.5
    theta = torch.tensor([-1.0, 2.0], dtype=torch.float64, requires_grad=True)
    log_std = torch.zeros(2, dtype=torch.float64, requires_grad=True)  # generator std starts at 1
    opt = torch.optim.SGD([theta, log_std], lr=0.2)
    g, sched = torch.Generator().manual_seed(0), FlowSchedule(shift=3.0)
    for _ in range(120):
        x = gaussian_samples(theta, log_std.exp(), g)
        # the critic is the exact fake score of the generator's current distribution
        critic = gaussian_score(theta.detach(), log_std.detach().exp())
        loss, _ = dmd_generator_loss(x, gaussian_score(mu_real, std_real), critic, None, None, sched, 1.0, g,
                                     reduction="sum")
        opt.zero_grad()
        (loss / x.shape[0]).backward()
        opt.step()
    torch.testing.assert_close(theta.detach(), mu_real, atol=1e-4, rtol=0)
    torch.testing.assert_close(log_std.detach().exp(), torch.full((2,), std_real, dtype=torch.float64),
                               atol=1e-4, rtol=0)


def test_learned_critic_dmd_loop_converges():
    # The full recipe in miniature: 5 critic flow-matching steps per generator DMD step; the critic is a
    # Gaussian denoiser with a learnable mean, whose flow-matching optimum is the generator's mean.
    mu_real, std = torch.tensor([1.0, -0.5], dtype=torch.float64), 0.5
    theta = torch.tensor([-1.0, 2.0], dtype=torch.float64, requires_grad=True)
    phi = theta.detach().clone().requires_grad_()
    gen_opt, critic_opt = torch.optim.SGD([theta], lr=0.05), torch.optim.SGD([phi], lr=0.5)
    g, sched = torch.Generator().manual_seed(0), FlowSchedule(shift=3.0)
    start = (theta.detach() - mu_real).norm()
    for _ in range(100):
        for _ in range(5):
            closs, clogs = critic_loss(gaussian_score(phi, std), gaussian_samples(theta, std, g), None, sched, g)
            critic_opt.zero_grad()
            closs.backward()
            critic_opt.step()
            assert theta.grad is None or theta.grad.abs().sum() == 0  # critic steps never reach the generator
        loss, _ = dmd_generator_loss(gaussian_samples(theta, std, g), gaussian_score(mu_real, std),
                                     gaussian_score(phi.detach(), std), None, None, sched, 1.0, g, reduction="sum")
        gen_opt.zero_grad()
        (loss / SHAPE[0]).backward()
        gen_opt.step()
        gen_opt.zero_grad()
    assert 0.02 <= clogs["sigma_mean"] <= 0.98
    assert (theta.detach() - mu_real).norm() < 0.1 < start / 20
    assert (phi.detach() - mu_real).norm() < 0.15  # the critic followed the generator


# ---- wiring: guidance, sigma, no_grad -------------------------------------------------------------
def test_generator_loss_uses_guided_teacher_and_plain_critic_under_no_grad():
    calls, seen = [], {}

    def spy(name, score):
        def denoiser(x, sigma, cond):
            assert not torch.is_grad_enabled(), f"{name} ran with grad enabled"
            calls.append((name, cond))
            if name == "critic":
                seen["x_t"], seen["sigma"] = x.clone(), sigma.clone()
            return score(x, sigma, cond)

        return denoiser

    cond_score, uncond_score = gaussian_score([1.0, 0.0], 0.5), gaussian_score([0.0, 0.5], 0.7)
    real = spy("real", lambda x, s, c: (cond_score if c == "cam" else uncond_score)(x, s, c))
    fake = spy("critic", gaussian_score([-0.5, 0.2], 0.6))
    g = torch.Generator().manual_seed(4)
    x = torch.randn(4, 3, 2, 2, 2, generator=g).requires_grad_()
    loss, logs = dmd_generator_loss(x, real, fake, "cam", "no-cam", FlowSchedule(shift=5.0), 3.0, g)
    loss.backward()
    assert sorted(calls) == [("critic", "cam"), ("real", "cam"), ("real", "no-cam")]
    sigma, x_t = seen["sigma"], seen["x_t"]
    assert sigma.shape == (4, 3) and torch.all(sigma == sigma[:, :1])  # one sigma per sample by default
    assert torch.all((sigma >= 0.02) & (sigma <= 0.98))
    c, u = posterior_x0([1.0, 0.0], 0.5, x_t, sigma), posterior_x0([0.0, 0.5], 0.7, x_t, sigma)
    expected = dmd_gradient(x, u + 3.0 * (c - u), posterior_x0([-0.5, 0.2], 0.6, x_t, sigma))
    torch.testing.assert_close(x.grad.double() * x.numel(), expected, rtol=1e-5, atol=1e-6)
    assert logs["sigma_mean"].item() == pytest.approx(sigma.mean().item())
    assert logs["grad_norm"].item() == pytest.approx(expected.norm().item(), rel=1e-5)


def test_generator_sigma_is_shifted_clamped_and_optionally_per_frame():
    seen = []

    def fake(x, sigma, cond):
        seen.append(sigma)
        return torch.zeros_like(x)

    x = torch.zeros(2000, 2, 1, 1, 1)
    drawn = []
    for shift in (1.0, 5.0):
        dmd_generator_loss(x, fake, fake, None, None, FlowSchedule(shift=shift), 1.0, torch.Generator().manual_seed(0),
                           sigma_range=(0.1, 0.9))
        drawn.append(seen[-1])
    plain, shifted = drawn
    assert plain.min() >= 0.1 and plain.max() <= 0.9 and shifted.min() >= 0.1 and shifted.max() <= 0.9
    assert plain.mean() == pytest.approx(0.5, abs=0.02)
    # E[5u / (1 + 4u)] = 1.25 (1 - ln 5 / 4) ~= 0.747 before the clamp (which trims both ends)
    assert shifted.mean() == pytest.approx(0.73, abs=0.03)
    dmd_generator_loss(x[:8], fake, fake, None, None, FlowSchedule(), 1.0, torch.Generator().manual_seed(0),
                       sigma_per="frame")
    assert not torch.all(seen[-1][:, 0] == seen[-1][:, 1])
    dmd_generator_loss(x[:8], fake, fake, None, None, FlowSchedule(), 1.0, None, sigma=torch.full((8,), 0.3))
    assert seen[-1].shape == (8, 2) and torch.all(seen[-1] == 0.3)
    with pytest.raises(ValueError, match="sigma_range"):
        dmd_generator_loss(x[:8], fake, fake, None, None, FlowSchedule(), 1.0, None, sigma_range=(0.5, 0.2))
    with pytest.raises(ValueError, match="sigma_per"):
        dmd_generator_loss(x[:8], fake, fake, None, None, FlowSchedule(), 1.0, None, sigma_per="chunk")


def test_critic_loss_detaches_the_student_sample():
    scale = torch.nn.Parameter(torch.tensor(0.5))
    x = torch.randn(2, 3, 1, 2, 2, requires_grad=True)
    loss, logs = critic_loss(lambda xt, s, c: scale * xt, x * 2, None, FlowSchedule(), torch.Generator().manual_seed(0))
    loss.backward()
    assert x.grad is None and scale.grad is not None and scale.grad != 0
    assert 0.02 <= logs["sigma_mean"] <= 0.98
