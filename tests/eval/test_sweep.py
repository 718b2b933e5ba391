"""``realcam eval sweep``: the view-change geometry and bins, the summary and its targets, and the command end to
end on a tiny random bundle (its numbers must equal what ``realcam stream`` reports for the same stream)."""
import json
import math

import pytest
import torch

from realcam import geometry
from realcam.cli import main
from realcam.eval.sweep import (ANGLE_EDGES, angle_bin, bin_names, check_targets, orbit_offset, summarize,
                                sweep_trajectories, translation_bin, view_change)
from tests.test_streaming import make_bundle

SIZE = 16


pytestmark = pytest.mark.usefixtures("restore_threads")     # the commands set torch's thread count


@pytest.mark.parametrize("degrees,direction,radius", [(3.0, 0.0, 2.0), (17.0, 1.3, 3.5), (40.0, -2.0, 2.5)])
def test_orbit_offset_turns_by_its_angle_and_looks_at_the_pivot(degrees, direction, radius):
    c2w = orbit_offset(degrees, direction, radius).double()
    geometry.validate_c2w(c2w)
    angle, dist = view_change(c2w[None])
    assert angle.item() == pytest.approx(degrees, abs=1e-4)
    assert dist.item() == pytest.approx(2 * radius * math.sin(math.radians(degrees) / 2), rel=1e-5)
    pivot = torch.tensor([0.0, 0.0, radius], dtype=torch.float64)
    assert torch.allclose(c2w[:3, 3] + radius * c2w[:3, 2], pivot, atol=1e-6)      # the pivot stays centred
    turn = c2w[:2, 2] / c2w[:2, 2].norm()                                           # the axis turns towards direction
    assert torch.allclose(turn, torch.tensor([math.cos(direction), math.sin(direction)], dtype=torch.float64),
                          atol=1e-6)


def test_view_change_of_builder_specs():
    angle, dist = view_change(geometry.parse_trajectory_spec("pan:right:20", 5))
    assert torch.allclose(angle, torch.tensor([0.0, 5.0, 10.0, 15.0, 20.0]), atol=1e-3) and dist.abs().max() < 1e-6
    angle, dist = view_change(geometry.parse_trajectory_spec("translate:right:0.4", 3))
    assert angle.abs().max() < 1e-3 and torch.allclose(dist, torch.tensor([0.0, 0.2, 0.4]), atol=1e-6)


def test_bins():
    assert bin_names(ANGLE_EDGES) == ["0", "0-5", "5-10", "10-20", "20-30", "30-45", ">45"]
    assert angle_bin(0.0, 0.0) == "0"
    assert angle_bin(0.0, 0.3) == "0-5"                  # a pure translation is a view change, not the identity
    assert angle_bin(5.0, 0.1) == "0-5" and angle_bin(5.01, 0.1) == "5-10"
    assert angle_bin(44.0, 1.0) == "30-45" and angle_bin(60.0, 1.0) == ">45"
    assert translation_bin(0.0, 0.0) == "0" and translation_bin(20.0, 0.0) == "0-0.1 m"
    assert translation_bin(3.0, 0.3) == "0.25-0.5 m" and translation_bin(3.0, 5.0) == ">2 m"


def test_sweep_trajectories_fill_every_bin():
    trajs = sweep_trajectories(6, ["static", "arc:left:30"], 2, torch.Generator().manual_seed(0))
    assert [n for n, _ in trajs[:2]] == ["static", "arc:left:30"] and len(trajs) == 2 + 2 * (len(ANGLE_EDGES) - 1)
    assert all(rel.shape == (6, 4, 4) for _, rel in trajs)
    bins = [angle_bin(*(float(v[0]) for v in view_change(rel[:1]))) for _, rel in trajs[2:]]
    assert bins == [b for b in bin_names(ANGLE_EDGES)[1:-1] for _ in range(2)]
    again = sweep_trajectories(6, [], 2, torch.Generator().manual_seed(0))
    assert all(torch.equal(a[1], b[1]) for a, b in zip(trajs[2:], again))            # seeded: reproducible


def _record(angle, psnr, copy_psnr, trajectory="t"):
    return {"trajectory": trajectory, "angle_deg": angle, "translation": 0.1, "angle_bin": angle_bin(angle, 0.1),
            "translation_bin": translation_bin(angle, 0.1), "psnr": psnr, "copy_psnr": copy_psnr, "ssim": 0.5,
            "copy_ssim": 0.4}


def test_summarize_and_targets():
    records = [_record(2.0, 30.0, 28.0), _record(4.0, 26.0, 27.0), _record(15.0, 21.0, 19.5), _record(25.0, 21, 18)]
    records.append({**_record(0.0, 36.0, 100.0), "translation": 0.0, "angle_bin": "0"})
    rows = {r["bin"]: r for r in summarize(records, "angle_bin", bin_names(ANGLE_EDGES))}
    assert list(rows) == ["0", "0-5", "10-20", "20-30"]                               # empty bins left out
    assert rows["0-5"]["frames"] == 2 and rows["0-5"]["psnr"] == 28.0 and rows["0-5"]["gain_db"] == 0.5
    assert rows["0-5"]["angle_deg"] == 3.0 and "lpips" not in rows["0-5"]
    targets = check_targets(list(rows.values()))
    assert targets["0"]["ok"] and targets["0-5"]["ok"] and targets["20-30"]["ok"]
    assert not targets["10-20"]["ok"] and targets["10-20"]["measured"] == pytest.approx(1.5)   # needs +2 dB


def test_eval_sweep_command_matches_stream(tmp_path, capsys):
    bundle = make_bundle(tmp_path / "bundle", size=SIZE)
    out = tmp_path / "sweep"
    rc = main(["eval", "sweep", "--bundle", str(bundle), "--scenes", "1", "--frames", "4", "--per-bin", "1",
               "--specs", "static,arc:left:30", "--out", str(out), "--quiet"])
    assert rc == 0
    report = json.loads((out / "sweep.json").read_text())
    report["records"] = [json.loads(line) for line in (out / "frames.jsonl").read_text().splitlines()]
    assert (out / "sweep.png").stat().st_size > 0 and "| angle (°) |" in (out / "sweep.md").read_text()
    assert len(report["records"]) == 4 * (2 + len(ANGLE_EDGES) - 1)
    ident = [r for r in report["records"] if r["angle_bin"] == "0"]
    assert len(ident) == 4 + 1 and all(r["copy_psnr"] == 100.0 for r in ident)    # static + the arc's first frame
    assert report["targets"]["0"]["ok"] is False               # a random network does not reproduce the source
    assert "lpips" not in report["records"][0] and "backbone" in report["lpips_unavailable"]
    # the same stream through `realcam stream` reports the same per-frame PSNR
    rc = main(["stream", "--bundle", str(bundle), "--source", "synthetic:seed=0,index=0,split=val", "--trajectory",
               "arc:left:30", "--frames", "4", "--out", str(tmp_path / "arc.mp4"), "--quiet"])
    stream = json.loads((tmp_path / "arc.json").read_text())["metrics"]
    arc = [r for r in report["records"] if r["trajectory"] == "arc:left:30"]
    assert [r["psnr"] for r in arc] == pytest.approx(stream["psnr"], abs=1e-9)
    assert "targets NOT met" in capsys.readouterr().out


def test_eval_sweep_errors(tmp_path, capsys):
    assert main(["eval", "sweep", "--specs", "arc:sideways:3", "--out", str(tmp_path)]) == 2
    assert "arc:sideways:3" in capsys.readouterr().err
    assert main(["eval", "nosuch"]) == 2 and "unknown tool 'nosuch'" in capsys.readouterr().err


def test_frame_scorer_lpips_from_local_weights(tmp_path):
    """LPIPS per frame from a local backbone file (FAKE random AlexNet weights, only to exercise the path):
    0 for identical frames, the lpips network's own value otherwise; too-small frames are refused by name."""
    import torchvision

    from realcam.eval.sweep import FrameScorer

    path = tmp_path / "fake_alexnet_features.pth"
    torch.save(torchvision.models.alexnet(weights=None).features.state_dict(), path)
    scorer = FrameScorer(str(path))
    assert scorer.lpips_unavailable is None
    g = torch.Generator().manual_seed(0)
    a, b = (torch.randint(0, 256, (2, 32, 32, 3), dtype=torch.uint8, generator=g) for _ in range(2))
    same, other = scorer(a, a), scorer(a, b)
    assert same["lpips"] == pytest.approx([0.0, 0.0], abs=1e-6) and min(other["lpips"]) > 0
    unit = lambda x: x.permute(0, 3, 1, 2).float() / 127.5 - 1  # noqa: E731
    with torch.no_grad():
        direct = scorer.lpips(unit(a), unit(b)).flatten().tolist()
    assert other["lpips"] == pytest.approx(direct, rel=1e-5)
    with pytest.raises(ValueError, match="lpips-backbone-weights"):
        scorer(a[:, :16, :16], b[:, :16, :16])
