"""Shared by the realcam.eval tests: camera paths rendered from held-out synthetic scenes."""
import pytest
import torch

from realcam import geometry
from realcam.data.synthetic import SyntheticSource


def render_path(spec: str, index: int = 0, size: int = 256, frames: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 [T, size, size, 3] of a held-out scene seen along ``spec`` from one of its rig cameras, the scene
    frozen at t = 0 (so every correspondence is due to the camera), and that camera's K."""
    src = SyntheticSource(num_cameras=1, num_frames=frames, height=size, width=size, seed=0, split="test")
    c2w, K, _ = src.cameras(index)
    rel = geometry.parse_trajectory_spec(spec, frames)
    return src.scene(index).render(c2w[0, 0][None] @ rel, K[0, 0].expand(frames, 3, 3), torch.zeros(frames),
                                   size, size), K[0, 0]


@pytest.fixture(scope="session")
def render():
    return render_path
