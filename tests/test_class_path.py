"""A user's own pose encoder, registered nowhere, selected by ``class_path`` through jsonargparse."""
import sys
import textwrap

import torch
from jsonargparse import ArgumentParser

from realcam.modules.backbone import CrossFrameDiT
from realcam.modules.cond import Cond
from realcam.registry import CAMERA_ENCODERS

USER_MODULE = textwrap.dedent("""
    import torch
    from torch import nn
    from realcam.modules.camera import CameraEncoder

    class MyPoseEncoder(CameraEncoder):
        '''Translation-only pose encoder: one vector per frame.'''
        def __init__(self, dim: int, scale: float = 1.0):
            super().__init__(dim)
            self.scale = scale
            self.proj = nn.Linear(3, dim)

        def forward(self, c2w, K, image_size, grid):
            return self.proj(c2w[..., :3, 3] * self.scale).unsqueeze(2)
""")

CONFIG = """
model:
  in_channels: 12
  dim: 16
  depth: 1
  heads: 2
  ffn_dim: 32
  freq_dim: 16
  camera_encoder:
    class_path: user_pose_encoders.MyPoseEncoder
    init_args:
      dim: 16
      scale: 2.0
"""


def test_unregistered_user_encoder_by_class_path(tmp_path, monkeypatch):
    (tmp_path / "user_pose_encoders.py").write_text(USER_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "config.yaml").write_text(CONFIG)
    try:
        parser = ArgumentParser()
        parser.add_class_arguments(CrossFrameDiT, "model")
        cfg = parser.parse_path(str(tmp_path / "config.yaml"))
        model = parser.instantiate(cfg).model
        assert type(model.camera_encoder).__name__ == "MyPoseEncoder"
        assert model.camera_encoder.scale == 2.0
        assert "MyPoseEncoder" not in CAMERA_ENCODERS.list() and "user_pose_encoders" not in str(CAMERA_ENCODERS)
        x = torch.randn(1, 2, 12, 4, 4)
        cond = Cond(torch.randn_like(x), torch.eye(4).repeat(1, 2, 1, 1), torch.eye(3).repeat(1, 2, 1, 1), (16, 16))
        assert model(x, torch.rand(1, 2), cond).shape == x.shape
    finally:
        sys.modules.pop("user_pose_encoders", None)


def test_registry_name_also_works_in_yaml(tmp_path):
    (tmp_path / "config.yaml").write_text("model:\n  dim: 16\n  heads: 2\n  depth: 1\n  camera_encoder: extrinsics_mlp\n")
    parser = ArgumentParser()
    parser.add_class_arguments(CrossFrameDiT, "model")
    model = parser.instantiate(parser.parse_path(str(tmp_path / "config.yaml"))).model
    assert type(model.camera_encoder).__name__ == "ExtrinsicsMLPEncoder"
