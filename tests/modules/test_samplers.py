"""Samplers on toy denoisers whose exact flow is known."""
import pytest
import torch

from realcam.modules.flow import FlowSchedule
from realcam.modules.samplers import euler_sample, guided_flow, predict_x0

SHAPE = (2, 3, 1, 2, 2)  # [B, F, C, h, w]


def gaussian_flow(mu, std):
    """Exact marginal flow E[eps - x0 | x_sigma] for data x0 ~ N(mu, std^2) per element."""

    def denoiser(x, sigma, cond):
        assert sigma.shape == x.shape[:2]  # the protocol's [B, F]
        s = sigma.double()[..., None, None, None]
        m, var = (1 - s) * mu, (1 - s) ** 2 * std ** 2 + s ** 2
        dx = x.double() - m
        return (s * dx / var - mu - (1 - s) * std ** 2 * dx / var).to(x.dtype)

    return denoiser


def test_euler_many_steps_reaches_gaussian_transport():
    # The probability-flow ODE of a Gaussian maps noise eps to mu + std * eps (quantiles are kept).
    mu, std = 0.7, 0.3
    eps = torch.randn(SHAPE, generator=torch.Generator().manual_seed(0))
    exact = mu + std * eps
    errors = [(euler_sample(gaussian_flow(mu, std), eps, None, FlowSchedule(shift=5.0).teacher_sigmas(n)) - exact)
              .abs().max().item() for n in (100, 1000)]
    assert errors[1] < 5e-3
    assert 5 < errors[0] / errors[1] < 20  # Euler is first order: 10x the steps, ~10x less error


def test_euler_bf16_noise_keeps_dtype():
    eps = torch.randn(SHAPE, generator=torch.Generator().manual_seed(0)).bfloat16()
    out = euler_sample(gaussian_flow(0.0, 0.5), eps, None, FlowSchedule(shift=1.0).teacher_sigmas(200))
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), 0.5 * eps.float(), atol=2e-2, rtol=0)


class Counting:
    """A denoiser whose flow is its condition tensor; counts calls."""

    def __init__(self):
        self.calls = 0

    def __call__(self, x, sigma, cond):
        self.calls += 1
        return cond.expand_as(x)


@pytest.mark.parametrize("g", [0.0, 1.0, 3.0])
def test_guidance_is_u_plus_g_c_minus_u(g):
    c, u = torch.full(SHAPE, 2.0), torch.full(SHAPE, -1.0)
    noise = torch.randn(SHAPE)
    fake = Counting()
    out = euler_sample(fake, noise, c, torch.tensor([1.0, 0.0]), guidance=g, uncond=u)
    torch.testing.assert_close(out, noise - (u + g * (c - u)))  # one Euler step of size -1
    assert fake.calls == (1 if g == 1.0 else 2)
    # Self Forcing's c + g (c - u) is this formula at g + 1
    torch.testing.assert_close(guided_flow(fake, noise, torch.ones(2, 3), c, g + 1, u), c + g * (c - u))


def test_no_uncond_means_one_call_per_step():
    fake = Counting()
    euler_sample(fake, torch.randn(SHAPE), torch.zeros(SHAPE), FlowSchedule().teacher_sigmas(5), guidance=4.0)
    assert fake.calls == 5


def perfect_x0(target, seen):
    """Predicts x0 = target exactly at any sigma; records every input x and sigma."""

    def denoiser(x, sigma, cond):
        seen.append((x.clone(), sigma.clone()))
        return (x - target) / sigma[..., None, None, None]

    return denoiser


def test_predict_x0_and_per_frame_sigma():
    target = torch.randn(SHAPE)
    x = torch.randn(SHAPE)
    sigma = torch.tensor([[0.2, 0.5, 0.9], [1.0, 0.3, 0.6]])
    torch.testing.assert_close(predict_x0(perfect_x0(target, []), x, sigma, None), target, atol=1e-5, rtol=0)
    torch.testing.assert_close(predict_x0(perfect_x0(target, []), x, torch.tensor(0.4), None), target,
                               atol=1e-5, rtol=0)


def test_sampler_argument_errors():
    with pytest.raises(ValueError, match="sigmas must be a non-empty descending sequence"):
        euler_sample(Counting(), torch.zeros(SHAPE), torch.zeros(SHAPE), torch.tensor([]))
