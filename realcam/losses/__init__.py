"""Losses as pure functions over tensors and denoiser callables (no Lightning, no module state).

- :func:`flow_matching_loss`: rectified-flow denoising (teacher, DMD critic).
- :func:`ode_regression_loss`: CausVid ODE init, one-step x0 onto the teacher's final x0.
- :func:`dmd_gradient`, :func:`dmd_loss`, :func:`dmd_generator_loss`, :func:`critic_loss`:
  Self-Forcing DMD (DESIGN §2).
"""
from realcam.losses.dmd import critic_loss, dmd_generator_loss, dmd_gradient, dmd_loss
from realcam.losses.flow_matching import flow_matching_loss
from realcam.losses.ode import ode_regression_loss

__all__ = ["critic_loss", "dmd_generator_loss", "dmd_gradient", "dmd_loss", "flow_matching_loss",
           "ode_regression_loss"]
