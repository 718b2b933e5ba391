"""``realcam bench`` runs on tiny shapes and writes its JSON, plots and tables (timings are never asserted),
and the inference fast paths the benchmarks rely on compute exactly what the plain forward computes."""
import json
from pathlib import Path

import pytest
import torch

from realcam.bench import main
from realcam.bench.report import BEGIN, END
from realcam.modules.backbone import CrossFrameDiT
from realcam.modules.cond import Cond
from realcam.modules.rope import Rope3D
from realcam.registry import ATTENTION_BACKENDS

pytestmark = pytest.mark.usefixtures("one_thread")


QUICK = ["--quick", "--image-size", "16", "16", "--frames", "2", "--warmup", "1", "--short-frame", "2",
         "--long-frames", "5", "--rounds", "2", "--lengths", "2", "--ttff-length", "2", "--backend-chunks", "1",
         "--teacher-probe", "1", "--video-repeats", "1", "--peak-size", "64", "--threads", "1", "--device", "cpu",
         "--compare-steps", "2,1"]


def test_suite_writes_every_section_plots_and_doc_table(tmp_path):
    doc = tmp_path / "benchmarks.md"
    doc.write_text("# Benchmarks\n\nhand-written text stays\n")
    out = tmp_path / "bench.json"
    assert main([*QUICK, "--out", str(out), "--doc", str(doc)]) == 0
    result = json.loads(out.read_text())
    assert {"stream", "steps", "constant", "video", "ttff", "backends", "flops", "wan", "targets",
            "machine"} <= set(result)
    assert result["denoising_steps"] == [1000, 750, 500, 250] == result["trained_steps"]      # random weights: recipe
    assert [(r["steps"], r["denoising_steps"], r["passes_per_chunk"]) for r in result["steps"]["rows"]] == \
        [(2, [1000, 500], 2), (1, [1000], 1)]          # each frame's cache pass inside the next one's first
    assert "GPU benchmark" in result["wan"]["skipped"]
    assert [r["dtype"] for r in result["stream"]["rows"]] == ["bf16", "fp32"]
    row = result["stream"]["rows"][0]
    assert row["end_to_end"]["includes"]["encode"] and row["end_to_end"]["includes"]["decode"]
    assert not row["transformer_only"]["includes"]["decode"] and row["end_to_end"]["fps"] > 0
    assert result["constant"]["long_frame"] == 5 and len(result["constant"]["curve_ms"]) == 4
    video = result["video"]["rows"][0]
    assert video["T"] == 2 and video["teacher_interleaved_method"] == "per_step"
    assert {"teacher_prefix_s", "student_s", "ratio_interleaved", "ratio_prefix"} <= set(video)
    # FLOPs counted in the same run: a 50-step teacher does more work per video than the streaming student
    assert video["flop_ratio_interleaved"] == pytest.approx(video["teacher_interleaved_gflop"] / video["student_gflop"])
    assert video["flop_ratio_interleaved"] > 1 and video["teacher_prefix_gflop"] > 0
    assert "per_step" in result["video"]["teacher_time_method"]
    assert result["ttff"]["streaming_ms"] > 0 and result["ttff"]["prefix_teacher_ms"] > 0
    assert {r["backend"] for r in result["backends"]["rows"]} == set(ATTENTION_BACKENDS.list())
    flops = result["flops"]
    assert flops["flops_per_chunk"] > 0 and 0 < flops["fraction_of_bf16_peak"]
    assert set(result["targets"]) == {"fps_ge_30_bf16", "constant_ratio_le_1.10", "teacher_over_student_ge_100_T32"}
    for plot in result["plots"]:
        assert (tmp_path / plot.split("/")[-1]).stat().st_size > 1000
    assert (tmp_path / "bench.md").read_text().startswith("Preset `tiny`")
    # the doc keeps its own text; a second run replaces the generated block instead of adding another
    main([*QUICK, "--only", "stream", "--dtypes", "fp32", "--no-plot", "--out", str(out), "--doc", str(doc)])
    text = doc.read_text()
    assert "hand-written text stays" in text and text.count(BEGIN) == 1 and text.count(END) == 1
    assert "| fp32 |" in text and "Seconds per generated video" not in text


def test_steps_option_reaches_every_student_timing(tmp_path):
    """--steps 1: one denoising pass + the cache pass per frame wherever the student is timed."""
    runs = {}
    for steps in (None, "1"):
        out = tmp_path / f"b{steps}.json"
        extra = [] if steps is None else ["--steps", steps]
        main([*QUICK, "--only", "video,flops", "--dtypes", "fp32", "--no-plot", *extra, "--out", str(out),
              "--doc", str(tmp_path / "none.md")])
        runs[steps] = json.loads(out.read_text())
    # the cache pass runs inside the next frame's first pass (StreamingGenerator's default): 1 and 4 passes
    assert runs["1"]["denoising_steps"] == [1000] and runs["1"]["video"]["student_passes_per_chunk"] == 1
    assert runs[None]["video"]["student_passes_per_chunk"] == 4 and runs[None]["fused_cache_pass"]
    assert runs["1"]["flops"]["flops_per_chunk"] < 0.6 * runs[None]["flops"]["flops_per_chunk"]
    assert runs["1"]["video"]["rows"][0]["student_gflop"] < 0.6 * runs[None]["video"]["rows"][0]["student_gflop"]
    out = tmp_path / "unfused.json"
    main([*QUICK, "--only", "video", "--dtypes", "fp32", "--no-plot", "--steps", "1", "--no-fuse", "--out", str(out),
          "--doc", str(tmp_path / "none.md")])
    unfused = json.loads(out.read_text())
    assert not unfused["fused_cache_pass"] and unfused["video"]["student_passes_per_chunk"] == 2
    with pytest.raises(SystemExit, match="--steps"):
        main([*QUICK, "--steps", "one", "--out", str(tmp_path / "c.json"), "--doc", str(tmp_path / "none.md")])


def test_bad_section_is_named(tmp_path):
    with pytest.raises(SystemExit, match="--only nope is not a section"):
        main([*QUICK, "--only", "nope", "--out", str(tmp_path / "b.json"), "--doc", str(tmp_path / "none.md")])


def test_missing_model_or_device_is_an_error_line_not_a_traceback(tmp_path, capsys):
    out = ["--out", str(tmp_path / "b.json"), "--doc", str(tmp_path / "none.md")]
    assert main([*QUICK, "--student", str(tmp_path / "missing"), *out]) == 2
    assert "realcam bench all: error: --student=" in capsys.readouterr().err
    assert main([*QUICK, "--device", "gpu", *out]) == 2
    assert "--device='gpu' is not a torch device" in capsys.readouterr().err


def test_cache_subcommand_still_runs(tmp_path):
    out = tmp_path / "cache.json"
    main(["cache", "--chunks", "3", "--rounds", "1", "--unbounded-chunks", "0", "--backend-chunks", "1",
          "--repeats", "1", "--grid", "4", "4", "--no-plot", "--out", str(out)])
    result = json.loads(out.read_text())
    assert result["latency"][0]["chunks"] == 3 and len(result["backends"]) == len(ATTENTION_BACKENDS.list())


def test_transformer_bench_wan_skips_on_cpu_and_runs_a_stand_in(tmp_path):
    out = tmp_path / "wan.json"
    main(["transformer", "--preset", "wan1.3b", "--device", "cpu", "--out", str(out)])
    assert "GPU benchmark" in json.loads(out.read_text())["skipped"]
    main(["transformer", "--preset", "wan1.3b", "--device", "cpu", "--grid", "4", "6", "--chunks", "1",
          "--warmup", "1", "--model-args", '{"dim": 48, "depth": 1, "heads": 2, "ffn_dim": 64}', "--out", str(out)])
    result = json.loads(out.read_text())
    assert result["stand_in"] and result["chunk_frames"] == 3 and result["latent_fps"] > 0
    assert result["tokens_per_chunk"] == 2 * 3 * 2 * 3 and not result["includes"]["decode"]


# ---- the inference fast paths are exact -------------------------------------------------------------------
SMALL = dict(in_channels=12, dim=24, depth=2, heads=2, ffn_dim=48, patch=(1, 2, 2), freq_dim=32)


def _model(**kw):
    model = CrossFrameDiT(**SMALL, attention_mode="causal", sink_chunks=1, window_chunks=2, **kw).eval()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return model


def _cond(F=5, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1, F, 12, 4, 6, generator=g)
    c2w = torch.eye(4).repeat(1, F, 1, 1)
    c2w[..., :3, 3] = torch.randn(1, F, 3, generator=g) * 0.3
    K = torch.tensor([[10.0, 0, 12], [0, 10.0, 8], [0, 0, 1]]).repeat(1, F, 1, 1)
    return x, Cond(torch.randn(x.shape, generator=g), c2w, K, (8, 12))


@pytest.mark.parametrize("autocast", [False, True])
def test_no_grad_buffers_and_memo_equal_the_grad_path_bit_for_bit(autocast):
    """With a cache, no-grad passes use memoized conditioning and preallocated KV buffers; the grad path
    concatenates fresh tensors. Both see the same numbers, also once chunks are evicted."""
    model = _model()
    x, cond = _cond()
    sigma = torch.full((1, 1), 0.7)
    fast_cache, slow_cache = model.new_cache(), model.new_cache()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        for i in range(x.shape[1]):
            c = cond.frames(i, i + 1)
            with torch.no_grad():
                fast = [model(x[:, i:i + 1], sigma * s, c, cache=fast_cache) for s in (1.0, 0.5)]
                model.write_cache(x[:, i:i + 1], c, fast_cache)
            slow = [model(x[:, i:i + 1], sigma * s, c, cache=slow_cache).detach() for s in (1.0, 0.5)]
            with torch.no_grad():
                model(x[:, i:i + 1], torch.zeros(1, 1), c, cache=slow_cache)
            fast_cache.commit()
            slow_cache.commit()
            for a, b in zip(fast, slow):
                assert torch.equal(a, b), f"chunk {i}"
    for a, b in zip(fast_cache.k + fast_cache.v, slow_cache.k + slow_cache.v):
        assert torch.equal(a, b), "write_cache must stage the K/V of the full sigma = 0 pass"


def test_conditioning_memo_lives_for_one_chunk():
    """The passes of one chunk share its conditioning (the cache protocol: one cond per chunk); the next chunk,
    after a commit, computes its own."""
    model = _model()
    x, cond = _cond(F=2)
    cache = model.new_cache()
    with torch.no_grad():
        a = model(x[:, :1], torch.ones(1, 1), cond.frames(0, 1), cache=cache)
        memo = dict(cache.scratch)
        assert len(memo) == 1
        model(x[:, :1], torch.full((1, 1), 0.5), cond.frames(0, 1), cache=cache)
        assert all(cache.scratch[k] is v for k, v in memo.items())          # reused by the chunk's next pass
        cache.commit()
        assert not cache.scratch
        moved = cond.frames(1, 2)
        moved.target_c2w[..., 0, 3] += 1.0
        b = model(x[:, :1], torch.ones(1, 1), moved, cache=cache)
        fresh = model.new_cache()
        model(x[:, :1], torch.full((1, 1), 0.5), cond.frames(0, 1), cache=fresh)   # the pass committed above
        fresh.commit()
        c = model(x[:, :1], torch.ones(1, 1), moved, cache=fresh)
    assert torch.equal(b, c) and not torch.allclose(a, b)


def test_rope_tables_rotate_like_apply():
    rope = Rope3D(12)
    x = torch.randn(2, 3, 4 * 6, 12)
    t = torch.tensor([0, 3, 3, 5])
    cos, sin = rope.angles(t, (2, 3))
    assert torch.equal(Rope3D.rotate(x, *rope.tables(t, (2, 3))), Rope3D.apply(x, cos, sin))
    assert rope.tables([0, 3, 3, 5], (2, 3))[0] is rope.tables(t, (2, 3))[0]     # memoized


def test_compare_bundles_script_times_each_bundle_and_writes_json(tmp_path, monkeypatch):
    """scripts/compare_bundles.py on two random tiny bundles: a row per bundle and step count, the first bundle
    the reference (speed-up 1)."""
    import runpy
    import sys

    from realcam.bundle import export_bundle
    from tests.test_streaming import bundle_config, tiny_network

    plain = export_bundle(tiny_network(), tmp_path / "plain", bundle_config())
    other = export_bundle(tiny_network(seed=5), tmp_path / "other", bundle_config())
    out = tmp_path / "cmp.json"
    monkeypatch.setattr(sys, "argv", ["compare_bundles.py", str(plain), str(other), "--steps", "1", "2",
                                      "--frames", "2", "--warmup", "1", "--threads", "1", "--out", str(out)])
    script = str(Path(__file__).resolve().parents[1] / "scripts" / "compare_bundles.py")
    runpy.run_path(script, run_name="__main__")
    rows = json.loads(out.read_text())["rows"]
    assert [(Path(r["bundle"]).name, r["steps"]) for r in rows] == [("plain", 1), ("plain", 2), ("other", 1),
                                                                    ("other", 2)]
    assert rows[0]["speedup"] == 1.0 and all(r["ms_p50"] > 0 for r in rows)
    assert [r["fused_cache_pass"] for r in rows] == [True, True, True, True]       # auto: fused for both
    monkeypatch.setattr(sys, "argv", ["compare_bundles.py", str(plain), "--fuse", "off", "on", "--steps", "1",
                                      "--frames", "2", "--warmup", "1", "--threads", "1", "--out", str(out)])
    runpy.run_path(script, run_name="__main__")
    assert [r["fused_cache_pass"] for r in json.loads(out.read_text())["rows"]] == [False, True]
    monkeypatch.setattr(sys, "argv", ["compare_bundles.py", str(plain)])
    with pytest.raises(SystemExit, match="at least two bundle"):
        runpy.run_path(script, run_name="__main__")
