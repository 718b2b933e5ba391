"""RotErr, TransErr and CamMC as docs/metrics.md writes them, on hand-made paths."""
import math

import pytest
import torch

from realcam import geometry
from realcam.eval.camera import average_summaries, camera_errors, normalize_scale, relative_to_first


def yawed(c2w: torch.Tensor, degrees: float) -> torch.Tensor:
    """Each pose turned by ``degrees`` about its own y axis (frame 0 too)."""
    R = geometry.so3_exp(torch.tensor([0.0, math.radians(degrees), 0.0], dtype=torch.float64))
    out = c2w.double().clone()
    out[:, :3, :3] = out[:, :3, :3] @ R
    return out


def test_identical_paths_score_zero_and_start_does_not_matter():
    gt = geometry.arc(6, 30.0).double()
    moved = geometry.look_at((1.0, -2.0, 3.0), (0.0, 0.0, 0.0)).double() @ gt      # same motion, elsewhere
    e = camera_errors(gt, moved)
    assert e.rot_err_deg.abs().max() < 1e-4 and e.trans_err.max() < 1e-6 and e.cammc.max() < 1e-6
    assert e.direction_cos == pytest.approx(1.0)


def test_rotation_error_is_the_geodesic_angle_summed_over_frames():
    gt = geometry.dolly(5, 1.0).double()
    est = gt.clone()
    est[1:] = yawed(gt[1:], 2.0)                 # frames 1..4 turned by 2 degrees, frame 0 untouched
    e = camera_errors(gt, est)
    assert e.rot_err_deg.tolist() == pytest.approx([0.0, 2.0, 2.0, 2.0, 2.0], abs=1e-6)
    s = e.summary()
    assert s["RotErr"] == pytest.approx(math.radians(8.0)) and s["RotErr_deg"] == pytest.approx(8.0)
    assert s["rot_err_deg_mean"] == pytest.approx(8.0 / 5)


def test_translation_is_compared_after_normalising_each_paths_scale():
    gt = geometry.translate(4, (0.3, 0.0, 0.4)).double()
    est = gt.clone()
    est[:, :3, 3] *= 7.0                           # same path, another (unknowable) scale
    for scale in ("max_norm", "least_squares"):
        assert camera_errors(gt, est, scale).trans_err.max() < 1e-6
    est[:, :3, 3] = -est[:, :3, 3]                 # the opposite direction
    e = camera_errors(gt, est)
    # normalised, gt ends at +1 along its direction and est at -1: distance 2 at the last frame
    assert e.trans_err[-1] == pytest.approx(2.0) and e.direction_cos == pytest.approx(-1.0)


def test_cammc_is_the_frobenius_norm_of_the_3x4_difference():
    gt = geometry.arc(4, 20.0).double()
    est = yawed(geometry.arc(4, 10.0).double(), 1.0)
    e = camera_errors(gt, est)
    g, x = normalize_scale(relative_to_first(gt), relative_to_first(est))
    expected = [float(torch.linalg.matrix_norm(g[t, :3, :4] - x[t, :3, :4])) for t in range(4)]
    assert e.cammc.tolist() == pytest.approx(expected)
    assert e.summary()["CamMC"] == pytest.approx(sum(expected))


def test_a_path_that_never_moves_stays_finite():
    e = camera_errors(geometry.pan(4, 10.0), geometry.pan(4, 10.0))
    assert e.trans_err.max() == 0 and e.direction_cos is None and math.isfinite(e.summary()["CamMC"])


def test_bad_paths_name_the_problem():
    with pytest.raises(ValueError, match="3 poses but the video has 4 estimated frames"):
        camera_errors(geometry.static(3), geometry.static(4))
    bad = geometry.static(3)
    bad[1, 0, 0] = -1.0
    with pytest.raises(ValueError, match=r"estimated_c2w\[1\] is not a rigid transform"):
        camera_errors(geometry.static(3), bad)
    with pytest.raises(ValueError, match="scale='median'"):
        camera_errors(geometry.static(3), geometry.static(3), scale="median")


def test_runs_are_averaged():
    a = {"RotErr": 1.0, "TransErr": 2.0, "scale": "max_norm", "frames": 4}
    b = {"RotErr": 3.0, "TransErr": 4.0, "scale": "max_norm", "frames": 4}
    assert average_summaries([a, b]) == {"RotErr": 2.0, "TransErr": 3.0, "scale": "max_norm", "frames": 4, "runs": 2}
