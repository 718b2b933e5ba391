"""``realcam eval camera``: every trajectory format, the outputs it writes, and clear errors on bad input."""
import json

import pytest
import torch

from realcam import geometry
from realcam.cli import main as realcam_main
from realcam.data.video import write_video
from realcam.geometry_io import Trajectory, save_multicam_json, save_realestate10k, save_trajectory

T = 5
SPEC = "arc:left:20"


@pytest.fixture(scope="module")
def video(tmp_path_factory, render):
    """A rendered arc at 256x256 as a near-lossless mp4, with its camera's K."""
    folder = tmp_path_factory.mktemp("camera_cli")
    frames, K = render(SPEC, frames=T)
    return write_video(folder / "gen.mp4", frames, fps=8, crf=0), K


def run(argv, capsys):
    code = realcam_main(["eval", "camera", *argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def fov_of(K: torch.Tensor) -> float:
    return float(2 * torch.rad2deg(torch.atan(K[0, 2] / K[0, 0])))


def test_spec_request_writes_json_and_plot_and_scores_well(video, tmp_path, capsys):
    path, K = video
    code, out, err = run(["--video", str(path), "--trajectory", SPEC, "--fov", f"{fov_of(K)}", "--runs", "1",
                          "--max-features", "1000", "--out", str(tmp_path / "arc")], capsys)
    assert code == 0, err
    report = json.loads((tmp_path / "arc.json").read_text())
    m = report["metrics"]
    assert m["rot_err_deg_mean"] < 1.0 and m["direction_cos"] > 0.95 and m["frames"] == T and m["lost_frames"] == 0
    assert len(report["extra"]["curves"]["rot_err_deg"]) == T and len(report["extra"]["estimated_c2w"]) == T
    assert (tmp_path / "arc.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "RotErr" in out and "wrote" in out
    code, out, _ = run(["--video", str(path), "--trajectory", "arc:right:20", "--fov", f"{fov_of(K)}", "--runs", "1",
                        "--max-features", "1000", "--out", str(tmp_path / "mirrored"), "--source", str(path)], capsys)
    assert "matched pixels with --source" in out
    mirrored = json.loads((tmp_path / "mirrored.json").read_text())["metrics"]
    assert mirrored["RotErr"] >= 5 * m["RotErr"]
    assert mirrored["matched_pixels"] > 50 and "matched_pixels" not in m      # the video against itself


@pytest.mark.parametrize("fmt", ["realcam", "multicam", "realestate10k"])
def test_every_trajectory_file_format_is_accepted(video, tmp_path, capsys, fmt):
    """realcam JSON (K from --intrinsics), MultiCamVideo JSON (--camera), RealEstate10K (its own normalized K)."""
    path, K = video
    c2w = geometry.look_at((2.0, -1.5, -4.0), (0.0, -0.5, 0.0)) @ geometry.parse_trajectory_spec(SPEC, T)
    args = ["--video", str(path), "--runs", "1", "--max-features", "1000", "--out", str(tmp_path / "out")]
    if fmt == "realcam":
        traj = save_trajectory(tmp_path / "traj.json", Trajectory(c2w))
        args += ["--intrinsics", ",".join(str(float(v)) for v in (K[0, 0], K[1, 1], K[0, 2], K[1, 2]))]
    elif fmt == "multicam":
        traj = save_multicam_json(tmp_path / "cams.json", {"cam01": c2w, "cam02": c2w})
        args += ["--camera", "cam01", "--fov", f"{fov_of(K)}"]
    else:
        traj = save_realestate10k(tmp_path / "re10k.txt", Trajectory(c2w, K=K, image_size=(256, 256),
                                                                      timestamps=torch.arange(T) * 0.125))
    code, out, err = run(args + ["--trajectory", str(traj)], capsys)
    assert code == 0, err
    report = json.loads((tmp_path / "out.json").read_text())
    assert report["metrics"]["rot_err_deg_mean"] < 1.0
    if fmt == "realestate10k":
        assert report["extra"]["intrinsics_from"].startswith("K of --trajectory")


def test_estimate_only_on_real_footage_writes_its_path(fixtures_dir, tmp_path, capsys):
    video = fixtures_dir / "recammaster" / "videos" / "10.mp4"
    code, out, err = run(["--video", str(video), "--estimate-only", "--fov", "60", "--frames", "6", "--stride", "10",
                          "--max-size", "256", "--max-features", "800", "--out", str(tmp_path / "ten")], capsys)
    assert code == 0, err
    report = json.loads((tmp_path / "ten.json").read_text())
    assert len(report["extra"]["estimated_c2w"]) == 6 and report["extra"]["video"]["evaluated_size"] == [144, 256]
    assert report["metrics"]["rotation_deg_max"] < 5.0        # a near-static shot: a sanity bound, not accuracy
    assert (tmp_path / "ten.png").stat().st_size > 0


def test_bad_input_gets_a_clear_error(video, tmp_path, capsys):
    path, K = video
    small = write_video(tmp_path / "small.mp4", torch.zeros(3, 64, 64, 3, dtype=torch.uint8), fps=8)
    code, _, err = run(["--video", str(small), "--trajectory", "pan:right:5", "--fov", "60"], capsys)
    assert code == 2 and "64x64 px" in err and "at least 96 px" in err

    longer = save_trajectory(tmp_path / "long.json", Trajectory(geometry.parse_trajectory_spec(SPEC, T + 3)))
    code, _, err = run(["--video", str(path), "--trajectory", str(longer), "--fov", "60"], capsys)
    assert code == 2 and f"mismatched frame counts: the video gives {T} frames" in err and f"gives {T + 3} poses" in err

    code, _, err = run(["--video", str(path), "--trajectory", SPEC], capsys)
    assert code == 2 and "missing intrinsics" in err and "--fov" in err and "--intrinsics" in err

    code, _, err = run(["--video", str(path), "--trajectory", str(longer), "--fov", "60", "--out", str(longer)[:-5]],
                       capsys)
    assert code == 2 and "would overwrite the input" in err

    code, _, err = run(["--video", str(path), "--trajectory", SPEC, "--fov", "60", "--source", str(small)], capsys)
    assert code == 2 and f"mismatched frame counts: --source {small} gives 3 frames but --video gives {T}" in err

    code, _, err = run(["--video", str(path), "--fov", "60"], capsys)
    assert code == 2 and "--trajectory is required" in err

    code, _, err = run(["--video", str(tmp_path / "nope.mp4"), "--trajectory", SPEC, "--fov", "60"], capsys)
    assert code == 2 and "does not exist" in err


def test_eval_group_lists_its_tools(capsys):
    assert realcam_main(["eval"]) == 0 and "camera" in capsys.readouterr().out
    assert realcam_main(["eval", "nonsense"]) == 2 and "unknown tool 'nonsense'" in capsys.readouterr().err
