"""FID and FVD: the Fréchet distance is right, weights come from local files only, and without them the
scores say 'unavailable' and name the option."""
import json
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from realcam.eval.fidelity import NO_FID, NO_FVD, FidelityScores, Moments, frechet_distance


def test_frechet_distance_matches_the_closed_form_of_commuting_covariances():
    mu_a, mu_b = torch.tensor([0.0, 1.0, 2.0]), torch.tensor([1.0, 1.0, 0.0])
    var_a, var_b = torch.tensor([1.0, 4.0, 9.0]), torch.tensor([4.0, 1.0, 1.0])
    expected = float((mu_a - mu_b).square().sum() + (var_a.sqrt() - var_b.sqrt()).square().sum())
    assert frechet_distance(mu_a, var_a.diag(), mu_b, var_b.diag()) == pytest.approx(expected)
    g = torch.Generator().manual_seed(0)
    A = torch.randn(5, 5, generator=g, dtype=torch.float64)
    cov = A @ A.T + torch.eye(5, dtype=torch.float64)
    assert frechet_distance(mu_a.new_zeros(5), cov, mu_a.new_zeros(5), cov) == pytest.approx(0.0, abs=1e-8)


def test_moments_equal_torch_cov_however_the_features_arrive():
    x = torch.randn(40, 6, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    m = Moments()
    for part in x.split(7):
        m.add(part)
    mu, cov = m.stats()
    assert torch.allclose(mu, x.mean(0)) and torch.allclose(cov, torch.cov(x.T))


def test_without_weights_both_say_unavailable_and_name_the_option(tmp_path):
    out = FidelityScores().compute()
    assert out == {"fid": None, "fid_unavailable": NO_FID, "fvd": None, "fvd_unavailable": NO_FVD}
    assert "fid_inception_weights=PATH" in NO_FID and "fvd_i3d_weights=PATH" in NO_FVD
    missing = FidelityScores(str(tmp_path / "nope.pth"), str(tmp_path / "nope.pt")).compute()
    assert "nope.pth does not exist" in missing["fid_unavailable"] and "nope.pt does not exist" in missing["fvd_unavailable"]


class StandInI3D(nn.Module):
    """The call signature of StyleGAN-V's TorchScript I3D: [B, 3, T, 224, 224] in [-1, 1] -> [B, 400]."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(3, 400)

    def forward(self, x: torch.Tensor, rescale: bool, resize: bool, return_features: bool) -> torch.Tensor:
        assert x.shape[1] == 3 and x.shape[-2:] == (224, 224)
        return self.proj(x.mean((2, 3, 4)))


def test_fvd_runs_a_local_torchscript_i3d_and_is_zero_for_identical_sets(tmp_path):
    path = tmp_path / "i3d_torchscript.pt"
    torch.jit.script(StandInI3D()).save(str(path))
    fvd = FidelityScores(fvd_i3d_weights=str(path))
    videos = torch.rand(4, 3, 3, 16, 16, generator=torch.Generator().manual_seed(2)) * 2 - 1
    fvd.update(videos, videos)
    same = fvd.compute()
    assert same["fvd"] == pytest.approx(0.0, abs=1e-6) and same["fvd_samples"] == 4
    assert same["fid"] is None and same["fid_unavailable"] == NO_FID
    fvd.reset()
    fvd.update(videos.clamp(max=0), videos)
    assert fvd.compute()["fvd"] > 1e-3


@pytest.fixture(scope="module")
def inception_file(tmp_path_factory):
    """torch-fidelity's InceptionV3 with random weights, saved as a state_dict: the real file's layout (its
    numbers are not FID, but the loading and feature path are the real ones)."""
    fe = pytest.importorskip("torch_fidelity.feature_extractor_inceptionv3")
    mp = pytest.MonkeyPatch()
    mp.setattr(fe, "load_state_dict_from_url", lambda *a, **k: {})            # nothing is fetched
    mp.setattr(fe.FeatureExtractorInceptionV3, "load_state_dict", lambda self, state: None)
    try:
        model = fe.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    finally:
        mp.undo()
    path = tmp_path_factory.mktemp("inception") / "pt_inception.pth"
    torch.save(model.state_dict(), path)
    return path


@pytest.mark.slow     # four 299x299 InceptionV3 passes: ~20 s on a busy 2-core CPU
def test_fid_runs_torch_fidelitys_inception_from_a_local_file(inception_file, tmp_path):
    fid = FidelityScores(fid_inception_weights=str(inception_file))
    videos = torch.rand(1, 2, 3, 32, 32, generator=torch.Generator().manual_seed(3)) * 2 - 1
    fid.update(videos, videos)
    out = fid.compute()
    assert out["fid"] == pytest.approx(0.0, abs=1e-3) and out["fid_samples"] == 2
    bad = tmp_path / "not_inception.pth"
    torch.save({"weight": torch.zeros(2)}, bad)
    with pytest.raises(ValueError, match="fid_inception_weights .* is not an InceptionV3 state_dict"):
        FidelityScores(fid_inception_weights=str(bad))


def test_predict_index_reports_fvd_from_local_weights_and_says_why_fid_is_missing(tmp_path):
    from realcam.systems.evaluation import PredictionWriter

    path = tmp_path / "i3d.pt"
    torch.jit.script(StandInI3D()).save(str(path))
    writer = PredictionWriter(output_dir=str(tmp_path / "out"), side_by_side=False, camera_metrics=False,
                              fvd_i3d_weights=str(path))
    trainer = SimpleNamespace(world_size=1, global_rank=0)
    writer.on_predict_epoch_start(trainer, None)
    g = torch.Generator().manual_seed(4)
    for i in range(2):
        batch = {"source": torch.rand(1, 3, 3, 16, 16, generator=g) * 2 - 1,
                 "target": torch.rand(1, 3, 3, 16, 16, generator=g) * 2 - 1, "key": [f"v{i}"]}
        writer.on_predict_batch_end(trainer, None, {"generated": batch["target"]}, batch, i)
    writer.on_predict_epoch_end(trainer, SimpleNamespace(global_step=0))
    summary = json.loads((tmp_path / "out" / "index.json").read_text())["metrics"]
    assert summary["fvd"] == pytest.approx(0.0, abs=1e-6) and summary["fvd_samples"] == 2
    assert summary["fid"] is None and summary["fid_unavailable"] == NO_FID
