"""FlowSchedule: shift warp, step lists, training sigmas, noising and exact x0 <-> flow conversion."""
import pytest
import torch

from realcam.modules.flow import FlowSchedule, expand_sigma, flow_matching_target, shift_sigma


def test_warp_values():
    sched = FlowSchedule(shift=5.0)
    assert sched.warp(0.5).item() == pytest.approx(5 / 6)
    torch.testing.assert_close(sched.warp(torch.tensor([0.0, 1.0])), torch.tensor([0.0, 1.0]))
    sigma = torch.linspace(0, 1, 11)
    torch.testing.assert_close(FlowSchedule(shift=1.0).warp(sigma), sigma)  # s = 1 is the identity
    assert torch.all(sched.warp(sigma[1:-1]) > sigma[1:-1])  # s > 1 spends steps at high noise
    assert torch.all(shift_sigma(sigma[1:-1], 0.5) < sigma[1:-1])


def test_student_sigmas_for_wan_shift():
    sigmas = FlowSchedule(shift=5.0).student_sigmas()
    # 5 t / (1 + 4 t) at t = 1, 0.75, 0.5, 0.25
    expected = torch.tensor([1.0, 3.75 / 4.0, 2.5 / 3.0, 1.25 / 2.0])
    torch.testing.assert_close(sigmas, expected)
    assert sigmas.dtype == torch.float32 and torch.all(sigmas[1:] < sigmas[:-1])
    torch.testing.assert_close(FlowSchedule(shift=1.0, denoising_steps=[1000, 500]).student_sigmas(),
                               torch.tensor([1.0, 0.5]))


def test_teacher_sigmas_are_warped_linspace_ending_at_zero():
    sched = FlowSchedule(shift=3.0)
    sigmas = sched.teacher_sigmas(4)
    assert sigmas.shape == (5,) and sigmas[0] == 1.0 and sigmas[-1] == 0.0
    torch.testing.assert_close(sigmas, sched.warp(torch.tensor([1.0, 0.75, 0.5, 0.25, 0.0])))
    with pytest.raises(ValueError, match="steps must be an int >= 1"):
        sched.teacher_sigmas(0)


def test_sample_training_sigma_modes_and_clamp():
    sched = FlowSchedule(shift=5.0)
    g = torch.Generator().manual_seed(0)
    uni = sched.sample_training_sigma((4000,), mode="uniform", generator=g, clamp=(0.02, 0.98))
    assert uni.shape == (4000,) and uni.min() >= 0.02 and uni.max() <= 0.98
    # shifted uniform: P(sigma' <= warp(0.5)) = 0.5
    assert (uni <= 5 / 6).float().mean().item() == pytest.approx(0.5, abs=0.03)
    ln = sched.sample_training_sigma((2, 3), generator=torch.Generator().manual_seed(1), shifted=False)
    assert ln.shape == (2, 3) and torch.all((ln > 0) & (ln < 1))
    many = sched.sample_training_sigma(4000, generator=g, mean=1.0, std=0.5, shifted=False)
    assert torch.logit(many.double()).mean().item() == pytest.approx(1.0, abs=0.05)
    assert torch.logit(many.double()).std().item() == pytest.approx(0.5, abs=0.05)
    again = sched.sample_training_sigma((2, 3), generator=torch.Generator().manual_seed(1), shifted=False)
    torch.testing.assert_close(ln, again)
    with pytest.raises(ValueError, match="expected one of logit_normal, uniform"):
        sched.sample_training_sigma((2,), mode="beta")
    with pytest.raises(ValueError, match="0 <= min <= max <= 1"):
        sched.sample_training_sigma((2,), clamp=(0.5, 0.2))


def test_noise_and_round_trip_exact_in_float64():
    sched = FlowSchedule()
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(2, 3, 4, 5, 6, generator=g, dtype=torch.float64), torch.randn(2, 3, 4, 5, 6, generator=g,
                                                                                        dtype=torch.float64)
    sigma = torch.rand(2, 3, generator=g, dtype=torch.float64) * 0.9 + 0.05
    x = sched.add_noise(x0, eps, sigma)
    flow = flow_matching_target(x0, eps)
    torch.testing.assert_close(sched.x0_from_flow(x, flow, sigma), x0, atol=1e-12, rtol=0)
    torch.testing.assert_close(sched.flow_from_x0(x, x0, sigma), flow, atol=1e-12, rtol=0)
    torch.testing.assert_close(x[1, 2], (1 - sigma[1, 2]) * x0[1, 2] + sigma[1, 2] * eps[1, 2])


def test_conversions_keep_dtype_and_handle_sigma_zero():
    x0 = torch.randn(1, 2, 3, 4, 4).bfloat16()
    eps = torch.randn_like(x0)
    sigma = torch.tensor([[0.0, 0.5]])  # a clean (source-like) frame and a noisy one
    x = FlowSchedule().add_noise(x0, eps, sigma)
    assert x.dtype == torch.bfloat16 and torch.equal(x[:, 0], x0[:, 0])
    flow = FlowSchedule().flow_from_x0(x, x0, sigma)
    assert flow.dtype == torch.bfloat16 and torch.isfinite(flow).all() and torch.all(flow[:, 0] == 0)
    assert FlowSchedule().x0_from_flow(x, flow, sigma).dtype == torch.bfloat16


@pytest.mark.parametrize("sigma_shape", [(), (2,), (2, 3), (1, 3)])
def test_sigma_broadcast_shapes(sigma_shape):
    x = torch.zeros(2, 3, 4, 5, 6)
    sigma = torch.full(sigma_shape, 0.25)
    out = FlowSchedule().add_noise(x, torch.ones_like(x), sigma)
    assert out.shape == x.shape and torch.allclose(out, torch.full_like(x, 0.25))
    assert FlowSchedule().add_noise(x, torch.ones_like(x), 0.25).shape == x.shape  # python scalar


def test_sigma_shape_mismatch_is_explained():
    with pytest.raises(ValueError, match=r"sigma of shape \(3,\) does not match the leading dims of x"):
        expand_sigma(torch.zeros(3), torch.zeros(2, 3, 4, 5, 6))


@pytest.mark.parametrize("kwargs, message", [
    (dict(shift=0.0), "shift = 0.0 must be a finite number > 0"),
    (dict(shift=float("nan")), "must be a finite number > 0"),
    (dict(denoising_steps=(1000, 1000)), "strictly descending"),
    (dict(denoising_steps=(500, 750)), r"\[0\] = 500 is followed by \[1\] = 750"),
    (dict(denoising_steps=(1001, 500)), r"denoising_steps\[0\] = 1001 is outside \(0, 1000\]"),
    (dict(denoising_steps=(1000, 0)), r"denoising_steps\[1\] = 0 is outside"),
    (dict(denoising_steps=()), "denoising_steps is empty"),
    (dict(num_train_timesteps=0), "num_train_timesteps = 0 must be an int > 0"),
])
def test_schedule_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        FlowSchedule(**kwargs)


def test_yaml_list_becomes_tuple():
    assert FlowSchedule(denoising_steps=[1000, 500]).denoising_steps == (1000, 500)
