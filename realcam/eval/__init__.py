"""Evaluation tools beyond the training loop's metrics: camera accuracy (RotErr, TransErr, CamMC) of generated
videos by pose estimation, and matched pixels between views. docs/metrics.md.

    from realcam.eval import evaluate_camera, camera_errors, CAMERA_ESTIMATORS
"""
from realcam.eval.camera import SCALE_MODES, CameraErrors, camera_errors
from realcam.eval.estimators import CAMERA_ESTIMATORS, EstimatedPath, build_estimator
from realcam.eval import colmap as _colmap  # noqa: F401  (registers the pycolmap and glomap estimators)
from realcam.eval.report import evaluate_camera, plot_camera

__all__ = ["SCALE_MODES", "CameraErrors", "camera_errors", "CAMERA_ESTIMATORS", "EstimatedPath", "build_estimator",
           "evaluate_camera", "plot_camera"]
