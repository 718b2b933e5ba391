"""``realcam stream`` on a synthetic scene and on the real ReCamMaster fixture, ``realcam demo`` (and the plan of
``--from-scratch``), and the clear failure when the bundled model is missing. Tiny random bundles only."""
import json
from pathlib import Path

import pytest
import torch

from realcam.cli import main
from realcam.data.video import read_video
from realcam.demo_cli import FROM_SCRATCH_FILES, demo_parser, from_scratch_plan
from realcam.stream_sources import parse_source_spec
from tests.test_streaming import make_bundle

FIXTURES = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures"
SIZE = 16


@pytest.fixture(autouse=True)
def _restore_threads():
    threads = torch.get_num_threads()     # the commands set torch's thread count (--threads, default 1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    return make_bundle(tmp_path_factory.mktemp("bundle") / "tiny", size=SIZE)


def fixture(*parts: str) -> Path:
    path = FIXTURES.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real-world fixture {path} not found (it lives in ../shared/fixtures beside the repo)")
    return path


def test_stream_synthetic_source_with_ground_truth(bundle, tmp_path, capsys):
    out = tmp_path / "out.mp4"
    rc = main(["stream", "--bundle", str(bundle), "--source", "synthetic:seed=3,index=1", "--trajectory",
               "arc:left:30", "--frames", "4", "--out", str(out), "--side-by-side", str(tmp_path / "sbs.mp4"),
               "--quiet"])
    assert rc == 0
    report = json.loads(out.with_suffix(".json").read_text())
    assert report["frames"] == 4 and report["source"]["scene_id"] == "synthetic-test-s3-000001"
    assert len(report["metrics"]["psnr"]) == 4 and report["metrics"]["source_copy_psnr_mean"] > 0
    assert len(report["stats"]["latency_ms"]) == 4 and report["stats"]["fps"] > 0
    assert read_video(out).shape == (4, SIZE, SIZE, 3)
    assert read_video(tmp_path / "sbs.mp4").shape == (4, SIZE, 3 * SIZE + 4, 3)   # source | generated | truth
    assert "PSNR" in capsys.readouterr().out


def test_stream_real_recammaster_video_and_camera(bundle, tmp_path):
    """1280x720 at 30 fps -> stride 4 (closest to the model's 8 fps), resized and centre-cropped to 16x16; cam01
    (pan right) is indexed by source frame and taken relative to its first pose."""
    video = fixture("recammaster", "videos", "10.mp4")
    cams = fixture("recammaster", "camera_extrinsics.json")
    out = tmp_path / "real.mp4"
    rc = main(["stream", "--bundle", str(bundle), "--video", str(video), "--trajectory", str(cams), "--camera",
               "cam01", "--frames", "5", "--out", str(out), "--side-by-side", str(tmp_path / "sbs.mp4"),
               "--json", str(tmp_path / "r.json"), "--quiet"])
    assert rc == 0
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["source"]["stride"] == 4 and report["trajectory"]["camera"] == "cam01"
    assert report["frames"] == 5 and report["fps_video"] == 7.5 and report["metrics"] == {}
    assert read_video(out).shape == (5, SIZE, SIZE, 3)
    assert read_video(tmp_path / "sbs.mp4").shape == (5, SIZE, 2 * SIZE + 2, 3)


def test_video_source_is_decoded_lazily_with_the_eager_frames_and_intrinsics(tmp_path):
    """open_video decodes and fits one frame at a time (constant memory for long videos); the frames and K are
    those of decoding the whole range at once and fitting it; --start past the end is named."""
    from realcam import geometry
    from realcam.data.video import read_video as read, write_video
    from realcam.stream_sources import VideoFrames, fit_frames, open_video

    t, y, x = torch.meshgrid(torch.arange(9), torch.arange(24), torch.arange(40), indexing="ij")
    video = write_video(tmp_path / "v.mp4", torch.stack([(x * 6 + 9 * t) % 256, y * 10, (x + y) * 4 % 256], -1)
                        .to(torch.uint8), fps=12)
    clip = open_video(video, (8, 8), 60.0, fps=None, stride=2, start=1, max_frames=3)
    assert isinstance(clip.frames, VideoFrames) and len(clip.frames) == 3 and clip.indices == [1, 3, 5]
    eager = read(video, start=1, stop=6, stride=2, size=clip.frames.decode_hw)
    K = geometry.resize_intrinsics(geometry.fov_intrinsics(24, 40, 60.0), (24, 40), clip.frames.decode_hw)
    want, want_K = fit_frames(eager, K, (8, 8))
    assert torch.equal(torch.stack(list(clip.frames)), want) and torch.equal(clip.K, want_K)
    assert len(open_video(video, (8, 8), 60.0, fps=None, stride=4, start=2).frames) == 2      # frames 2, 6
    with pytest.raises(ValueError, match="--start 9 is past the end.*9 frames"):
        open_video(video, (8, 8), 60.0, fps=None, stride=1, start=9)


def test_truncated_video_streams_what_it_has_and_says_so(bundle, tmp_path, capsys):
    """A recording cut short (its index, written first, promises more frames than the file holds): the stream
    keeps every frame that decodes, writes them, and says where the source ended."""
    import av
    import numpy as np
    from fractions import Fraction

    full = tmp_path / "full.mp4"
    with av.open(str(full), mode="w", format="mp4", options={"movflags": "faststart"}) as container:
        stream = container.add_stream("libx264", rate=Fraction(8))
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        rng = np.random.default_rng(0)
        for _ in range(24):
            frame = av.VideoFrame.from_ndarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(full.read_bytes()[: int(full.stat().st_size * 0.6)])
    out = tmp_path / "out.mp4"
    assert main(["stream", "--bundle", str(bundle), "--video", str(cut), "--stride", "1", "--out", str(out),
                 "--quiet"]) == 0
    report = json.loads(out.with_suffix(".json").read_text())
    assert 0 < report["frames"] < 24 and report["source_ended_early"].startswith(f"the source ended after "
                                                                                f"{report['frames']} of 24")
    assert read_video(out).shape[0] == report["frames"]
    assert "warning: the source ended after" in capsys.readouterr().err


def test_stream_realestate10k_file_ends_the_stream_where_it_ends(bundle, tmp_path):
    txt = sorted(fixture("realestate10k").glob("*.txt"))[0]
    rc = main(["stream", "--bundle", str(bundle), "--source", "synthetic:seed=0", "--trajectory", str(txt),
               "--frames", "20", "--out", str(tmp_path / "o.mp4"), "--quiet"])
    assert rc == 0
    report = json.loads((tmp_path / "o.json").read_text())
    assert report["frames"] == report["trajectory"]["poses_in_file"] == 16   # the file has 16 poses


def test_stream_errors_are_clear(bundle, tmp_path, capsys):
    args = ["stream", "--bundle", str(bundle), "--out", str(tmp_path / "o.mp4"), "--quiet"]
    assert main([*args, "--source", "synthetic:seed=0", "--trajectory", "arc:left:30", "--camera", "cam01"]) == 2
    assert "--camera cam01 only applies" in capsys.readouterr().err
    assert main([*args, "--source", "webcam:0"]) == 2
    assert "--video PATH" in capsys.readouterr().err
    assert parse_source_spec("synthetic:seed=4,split=val") == {"seed": 4, "index": 0, "split": "val"}
    for spec, needle in [("synthetic:seed=x", "seed='x' is not an integer"), ("synthetic:index=-1", "index=-1 is "
                         "negative"), ("synthetic:sed=1", "'sed=1' is not one of")]:
        assert main([*args, "--source", spec, "--trajectory", "arc:left:30"]) == 2
        assert needle in capsys.readouterr().err
    # values that used to fall back to a default (0 for --frames / --fps) or crash later (--scale 0) are refused
    for flag, value, needle in [("--frames", "0", "0 must be >= 1"), ("--fps", "0", "must be a positive number"),
                                ("--fov", "180", "field of view must be in (0, 180)"), ("--scale", "0", ">= 1"),
                                ("--stride", "0", ">= 1"), ("--out", "o.txt", "ending in .mp4 (for example o.mp4)"),
                                ("--side-by-side", "s.avi", "ending in .mp4"), ("--crf", "52", "above 51")]:
        with pytest.raises(SystemExit) as exit_info:
            main([*args, "--source", "synthetic:seed=0", flag, value])
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and f"argument {flag}: " in err and needle in err


def test_demo_streams_a_closed_loop_and_reports_loop_psnr(bundle, tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--bundle", str(bundle), "--out", str(out), "--length", "9", "--scale", "1", "--quiet"]) == 0
    report = json.loads((out / "demo.json").read_text())
    m = report["metrics"]
    # 2 laps of 4 poses plus the return: steps 4..8 revisit 0..4 (the last one the first pose: loop closure)
    assert m["revisit_pairs"] == [[4, 0], [5, 1], [6, 2], [7, 3], [8, 0]] and len(m["loop_psnr"]) == 5
    assert m["closure_psnr"] == m["loop_psnr"][-1] and len(m["psnr"]) == 9
    assert (out / "latency.png").stat().st_size > 0
    assert read_video(out / "demo.mp4").shape == (9, SIZE, 3 * SIZE + 4, 3)
    printed = capsys.readouterr().out
    assert "FPS" in printed and "loop PSNR" in printed and "closure" in printed


def test_demo_without_bundled_model_names_folder_and_command(monkeypatch, tmp_path, capsys):
    import realcam.bundle as bundle_module

    monkeypatch.setattr(bundle_module, "ASSETS", tmp_path / "assets")
    assert main(["demo", "--out", str(tmp_path / "d"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert str(tmp_path / "assets" / "tiny_student") in err and "realcam export --config" in err
    assert main(["stream", "--source", "synthetic:seed=0", "--out", str(tmp_path / "o.mp4")]) == 2
    assert "tiny_student" in capsys.readouterr().err


def test_demo_from_scratch_plan(tmp_path, capsys):
    args = demo_parser().parse_args(["--from-scratch", "--teacher-steps", "7", "--workdir", str(tmp_path / "w")])
    plan = from_scratch_plan(tmp_path / "w", args)
    heads = [" ".join(step[:2]) for step in plan]
    assert heads == ["data make-shards", "data make-shards", "fit --config", "data make-ode-pairs", "fit --config",
                     "fit --config", "export --config", "demo --bundle"]
    assert [step[2] for step in plan if step[0] == "fit"] == list(FROM_SCRATCH_FILES)
    assert "7" == plan[2][plan[2].index("--trainer.max_steps") + 1]
    outputs = [a for step in plan for a in step if a.startswith(str(tmp_path))]
    assert all(a.startswith(str(tmp_path / "w")) for a in outputs) and len(outputs) > 10
    repo = Path(__file__).resolve().parents[1]
    if not all((repo / f).is_file() for f in FROM_SCRATCH_FILES):
        pytest.skip("the student configs are not in this checkout yet")
    assert main(["demo", "--from-scratch", "--dry-run", "--repo", str(repo), "--workdir", str(tmp_path / "w")]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) == 8 and printed[0].startswith("[1/8] realcam data make-shards")
    assert not (tmp_path / "w").exists()                         # a dry run writes nothing
    assert main(["demo", "--from-scratch", "--dry-run", "--repo", str(tmp_path)]) == 2
    assert "needs a realcam repository checkout" in capsys.readouterr().err


def test_no_fuse_flag_reaches_the_generator(bundle):
    from realcam.stream_cli import load_generator, stream_parser

    base = ["--source", "synthetic:seed=1", "--trajectory", "arc:left:10", "--out", "x.mp4", "--bundle", str(bundle)]
    fused, _ = load_generator(stream_parser().parse_args(base))
    unfused, _ = load_generator(stream_parser().parse_args([*base, "--no-fuse"]))
    assert fused.fuse_cache_pass and not unfused.fuse_cache_pass


def test_shipped_bundles_load_and_default_demo_reproduces_documented_numbers(tmp_path, capsys):
    """The README's first command on the models shipped in realcam/assets: it runs with no training and no
    --bundle, and its quality is the one docs/results/demo.json records (bf16 rounding may differ per CPU)."""
    from realcam.bundle import bundled_model, load_bundle
    teacher = load_bundle(bundled_model("tiny_teacher"))
    assert teacher.config["role"] == "teacher" and teacher.network.attention_mode == "bidirectional"
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--quiet"]) == 0
    m = json.loads((out / "demo.json").read_text())["metrics"]
    documented = json.loads((Path(__file__).resolve().parents[1] / "docs/results/demo.json").read_text())["metrics"]
    assert m["psnr_mean"] > m["source_copy_psnr_mean"] + 3.0
    for key in ("psnr_mean", "loop_psnr_mean", "closure_psnr", "source_copy_psnr_mean"):
        assert abs(m[key] - documented[key]) < 0.1, (key, m[key], documented[key])


def test_ctrl_c_mid_stream_writes_the_frames_so_far(bundle, tmp_path, monkeypatch, capsys):
    """Ctrl-C while `realcam stream` runs: the frames generated so far are written (mp4, side by side, JSON
    marked interrupted) and the command exits 130."""
    from realcam.streaming import StreamingGenerator
    push, calls = StreamingGenerator.push, [0]

    def interrupted_push(self, *args, **kwargs):
        calls[0] += 1
        if calls[0] == 4:
            raise KeyboardInterrupt
        return push(self, *args, **kwargs)
    monkeypatch.setattr(StreamingGenerator, "push", interrupted_push)
    out = tmp_path / "out.mp4"
    rc = main(["stream", "--bundle", str(bundle), "--source", "synthetic:seed=3", "--trajectory", "arc:left:30",
               "--frames", "8", "--out", str(out), "--side-by-side", str(tmp_path / "sbs.mp4"), "--quiet"])
    assert rc == 130 and "interrupted after 3 of 8 frames" in capsys.readouterr().err
    report = json.loads(out.with_suffix(".json").read_text())
    assert report["interrupted"] and report["frames"] == 3 and len(report["metrics"]["psnr"]) == 3
    assert read_video(out).shape[0] == 3 and read_video(tmp_path / "sbs.mp4").shape[0] == 3


def test_version_and_usage(capsys):
    import realcam

    assert main(["--version"]) == 0 and f"realcam {realcam.__version__}" in capsys.readouterr().out
    assert main([]) == 0 and "realcam <command> --help" in capsys.readouterr().out
    from realcam.cli import LIGHTNING_COMMANDS, SUMMARIES, TOOL_COMMANDS
    assert set(SUMMARIES) == {*LIGHTNING_COMMANDS, *TOOL_COMMANDS}           # every command has its line
    with pytest.raises(SystemExit):
        main(["data", "--help"])
    assert "make-ode-pairs" in capsys.readouterr().out                       # listed, though it lives in systems/
    with pytest.raises(SystemExit):
        main(["data", "make-ode-pairs", "--help"])
    assert "--teacher" in capsys.readouterr().out
    assert main(["nope"]) == 2 and "unknown command 'nope'" in capsys.readouterr().err
    import subprocess
    import sys
    run = subprocess.run([sys.executable, "-m", "realcam", "--version"], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and run.stdout.startswith(f"realcam {realcam.__version__}")    # python -m realcam


def test_export_network_args_override_the_inference_network(tmp_path, capsys):
    """``realcam export --network-args`` changes a parameter-free option of the exported network (the weights
    load as before) and names an unknown key."""
    import yaml

    from realcam.streaming import load_bundle
    from tests.test_streaming import tiny_network, write_training_run

    config, ckpt = write_training_run(tmp_path / "run", tiny_network(seed=5))
    base = ["export", "--config", str(config), "--ckpt", str(ckpt)]
    assert main([*base, "--out", str(tmp_path / "b"), "--network-args", '{"window_chunks": 2}']) == 0
    cfg = yaml.safe_load((tmp_path / "b" / "config.yaml").read_text())
    assert cfg["network"]["init_args"]["window_chunks"] == 2 and "--network-args" in cfg["provenance"]["commands"][-1]
    assert load_bundle(tmp_path / "b").network.window_chunks == 2
    assert main([*base, "--out", str(tmp_path / "c"), "--network-args", '{"no_such_option": 1}']) == 2
    assert "no_such_option" in capsys.readouterr().err and not (tmp_path / "c").exists()


# ------------------------------------------------------------------------------------------------ Wan bundles
def wan_bundle(out: Path, vae_dir: Path, text: torch.Tensor | None, size: int = 32) -> Path:
    """A tiny-wan student (random weights, 2 latent frames per chunk) whose codec is the tiny Wan VAE folder,
    at the fixture video's 30 fps (stride 1), with the prompt embedding ``text`` as its text.npy."""
    from realcam.bundle import export_bundle
    from tests.test_streaming import TINY, bundle_config, tiny_network

    overrides = dict(in_channels=16, chunk_frames=2)
    config = {**bundle_config(size), "network": "tiny-wan", "network_args": {**TINY, **overrides}, "fps": 30.0,
              "codec": {"class_path": "realcam.modules.wan_vae.WanCodec", "init_args": {"path": str(vae_dir)}}}
    return export_bundle(tiny_network(2, name="tiny-wan", in_channels=16), out, config, text=text)


def test_stream_wan_bundle_on_the_recammaster_video_follows_the_1_plus_4k_rule(tiny_wan_vae_dir, tmp_path, capsys):
    """A bundle on the Wan VAE streams the real fixture video through it: 16 frames at 2 latent frames per chunk
    fill chunks of 5 and 8 frames, so 13 = 1 + 4 * 3 come out and the last 3 are dropped with a line saying so.
    The prompt is the bundle's text.npy."""
    video = fixture("recammaster", "videos", "10.mp4")
    cams = fixture("recammaster", "camera_extrinsics.json")
    bundle = wan_bundle(tmp_path / "wan", tiny_wan_vae_dir, torch.randn(3, 32))
    assert sorted(p.name for p in bundle.iterdir()) == ["config.yaml", "model.safetensors", "text.npy"]
    out = tmp_path / "wan.mp4"
    rc = main(["stream", "--bundle", str(bundle), "--video", str(video), "--trajectory", str(cams), "--camera",
               "cam01", "--frames", "16", "--out", str(out), "--side-by-side", str(tmp_path / "sbs.mp4"), "--quiet"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "dropped the last 3 source frames: they do not fill a whole chunk" in captured.out
    report = json.loads(out.with_suffix(".json").read_text())
    assert report["frames"] == 13 and report["frames_past_last_chunk"] == 3 and report["source"]["stride"] == 1
    assert report["stats"]["chunks"] == 2 and report["stats"]["buffer_latency_frames"] == 7
    assert report["stats"]["buffer_latency_ms"] == pytest.approx(7 * 1000 / 30)
    assert read_video(out).shape == (13, 32, 32, 3)
    assert read_video(tmp_path / "sbs.mp4").shape == (13, 32, 2 * 32 + 2, 3)        # source | generated


def test_stream_text_model_needs_a_prompt_named_by_its_flag(tiny_wan_vae_dir, tmp_path, capsys):
    """A text model with no text.npy and no --text is refused naming --text; --text FILE.npy streams it; an
    embedding of the wrong width names the flag and the width."""
    import numpy as np

    video = fixture("recammaster", "videos", "10.mp4")
    bundle = wan_bundle(tmp_path / "wan", tiny_wan_vae_dir, None)
    args = ["stream", "--bundle", str(bundle), "--video", str(video), "--trajectory", "arc:left:20",
            "--out", str(tmp_path / "o.mp4"), "--quiet", "--frames", "5"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "reads text (text_dim=32)" in err and "realcam stream --text FILE.npy" in err
    np.save(tmp_path / "prompt.npy", np.random.default_rng(0).standard_normal((4, 32)).astype(np.float32))
    assert main([*args, "--text", str(tmp_path / "prompt.npy")]) == 0
    assert json.loads((tmp_path / "o.json").read_text())["frames"] == 5 and "dropped" not in capsys.readouterr().out
    np.save(tmp_path / "narrow.npy", np.zeros((4, 16), np.float32))
    assert main([*args, "--text", str(tmp_path / "narrow.npy")]) == 2
    assert "--text" in (err := capsys.readouterr().err) and "[L, 32]" in err
    assert main([*args, "--text", str(tmp_path / "missing.npy")]) == 2
    assert "missing.npy does not exist" in capsys.readouterr().err
    assert main([*args[:-1], "4", "--text", str(tmp_path / "prompt.npy")]) == 2     # 4 frames: not one chunk
    assert "shorter than one chunk (5 source frames)" in capsys.readouterr().err


def test_stream_wan_bundle_with_a_missing_vae_names_the_path_and_the_fix(tmp_path, capsys):
    bundle = wan_bundle(tmp_path / "wan", tmp_path / "no_vae", torch.zeros(2, 32))
    assert main(["stream", "--bundle", str(bundle), "--source", "synthetic:seed=0", "--frames", "5",
                 "--out", str(tmp_path / "o.mp4"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "no_vae" in err and "does not exist" in err and "diffusers folder" in err
    assert not (tmp_path / "o.mp4").exists()
