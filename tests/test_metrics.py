import json
import math

import av
import pytest
import torch
import torchvision
from torchmetrics.functional.image import structural_similarity_index_measure

from realcam.metrics import (BASELINE, VideoMetrics, build_lpips, save_side_by_side, scalars, to_uint8_frames,
                             write_report)

B, T, H, W = 2, 6, 16, 16


def video(b=B, t=T, h=H, w=W, lo=-1.0, hi=1.0):
    return torch.rand(b, t, 3, h, w) * (hi - lo) + lo


def run(*batches, **kw):
    m = VideoMetrics(**kw)
    for batch in batches:
        m.update(*batch[:3], **batch[3] if len(batch) > 3 else {})
    return m.compute()


def same(a, b):
    """Two compute() dicts agree: the same keys, None in the same places, numbers equal to 1e-9."""
    assert a.keys() == b.keys()
    for k in a:
        numeric = isinstance(a[k], (int, float)) and isinstance(b[k], (int, float))
        assert a[k] == pytest.approx(b[k], rel=1e-9) if numeric else a[k] == b[k], k
    return True


def looped_gt():
    """GT [B, T, 3, H, W] where steps 4 and 5 revisit steps 1 and 0, with the matching revisit tensor."""
    gt = video(lo=-0.8, hi=0.8)
    gt[:, 4], gt[:, 5] = gt[:, 1], gt[:, 0]
    revisit = torch.full((B, T), -1, dtype=torch.long)
    revisit[:, 4], revisit[:, 5] = 1, 0
    return gt, revisit


# ---------------------------------------------------------------- PSNR / SSIM

def test_identical_videos_cap_psnr_and_give_unit_ssim():
    x = video()
    r = run((x, x, video()))
    assert r["psnr"] == 100.0 and r["ssim"] == pytest.approx(1.0, abs=1e-6)
    assert run((x, x, x), psnr_cap=60.0)["psnr"] == 60.0


def test_psnr_matches_analytic_value_per_frame():
    gt = video(lo=-0.5, hi=0.5)                      # +-0.2 noise stays inside [-1, 1], so no clamping
    sign = torch.randint(0, 2, gt.shape).float() * 2 - 1
    level = torch.tensor([0.1, 0.2, 0.05, 0.1, 0.2, 0.05]).view(1, T, 1, 1, 1)
    r = run((gt + sign * level, gt, gt))
    # mse on [-1, 1] is level^2 exactly; the score is the mean of per-frame PSNRs, not PSNR of the pooled mse
    expected = sum(10 * math.log10(4 / s ** 2) for s in level.flatten().tolist()) / T
    assert r["psnr"] == pytest.approx(expected, abs=1e-4)
    assert r["num_frames"] == B * T


def test_ssim_is_torchmetrics_ssim_on_unit_range_frames():
    gt, gen = video(), video()
    r = run((gen, gt, gt))
    ref = structural_similarity_index_measure((gen.flatten(0, 1) + 1) / 2, (gt.flatten(0, 1) + 1) / 2,
                                              data_range=1.0)
    assert r["ssim"] == pytest.approx(float(ref), abs=1e-5)
    noisy = run(((gt + 0.05 * torch.randn_like(gt)).clamp(-1, 1), gt, gt))["ssim"]
    assert r["ssim"] < noisy < 1.0


# ---------------------------------------------------------------- loop closure and flicker

def test_loop_closure_high_when_revisits_are_respected_low_otherwise():
    gt, revisit = looped_gt()
    consistent = (gt + 0.25 * torch.randn_like(gt)).clamp(-1, 1)
    consistent[:, 4], consistent[:, 5] = consistent[:, 1], consistent[:, 0]
    drifting = (gt + 0.25 * torch.randn_like(gt)).clamp(-1, 1)    # fresh noise at the revisit steps
    good = run((consistent, gt, gt, {"revisit": revisit}))
    bad = run((drifting, gt, gt, {"revisit": revisit}))
    assert good["num_loop_pairs"] == 2 * B
    assert good["loop_psnr"] == 100.0 and good["loop_ssim"] == pytest.approx(1.0, abs=1e-6)
    assert bad["loop_psnr"] < 20.0 and bad["loop_ssim"] < 0.9
    assert good["loop_gt_psnr"] == bad["loop_gt_psnr"] == 100.0     # exact revisits: the sanity value
    assert good["loop_gt_ssim"] == pytest.approx(1.0, abs=1e-6)
    # per-frame scores ignore frame order, so only the loop metrics tell the two apart
    assert abs(good["psnr"] - bad["psnr"]) < 1.0


def test_loop_metrics_are_none_without_revisits():
    r = run((video(), video(), video()))
    assert r["num_loop_pairs"] == 0 and r["loop_psnr"] is None and r[BASELINE + "loop_ssim"] is None
    assert "loop_psnr" not in scalars(r)


def test_flicker_formula_in_unit_range():
    levels = torch.tensor([-1.0, 0.0, 1.0, 1.0, -1.0, -1.0]).view(1, T, 1, 1, 1)
    gt = levels.expand(B, T, 3, H, W).clone()        # steps on [0, 1]: 0.5, 0.5, 0, 1, 0 -> mean 0.4
    static = torch.zeros(B, T, 3, H, W)
    r = run((static, gt, gt))
    assert r["flicker"] == 0.0 and r["flicker_gt"] == pytest.approx(0.4)
    assert r["flicker_diff"] == pytest.approx(-0.4) and r["num_flicker_pairs"] == B * (T - 1)
    assert r[BASELINE + "flicker"] == pytest.approx(0.4) and r[BASELINE + "flicker_diff"] == pytest.approx(0.0)


# ---------------------------------------------------------------- baseline, accumulation, sync

def test_source_copy_baseline_equals_the_metric_on_the_source():
    gt, revisit = looped_gt()
    src, gen = video(), video()
    r = run((gen, gt, src, {"revisit": revisit}))
    as_output = run((src, gt, src, {"revisit": revisit}))
    for key in ("psnr", "ssim", "loop_psnr", "loop_ssim", "flicker", "flicker_diff"):
        assert r[BASELINE + key] == pytest.approx(as_output[key], rel=1e-9), key
    assert r[BASELINE + "psnr"] != pytest.approx(r["psnr"])


def test_two_batches_equal_one_concatenated_batch():
    gt, revisit = looped_gt()
    gen, src = video(), video()
    split = [(gen[i:i + 1], gt[i:i + 1], src[i:i + 1], {"revisit": revisit[i:i + 1]}) for i in range(B)]
    assert same(run(*split), run((gen, gt, src, {"revisit": revisit})))


def test_variable_length_batches_equal_a_padded_batch_with_lengths():
    gt, revisit = looped_gt()
    gen, src = video(), video()
    short = (gen[:1, :4], gt[:1, :4], src[:1, :4], {"revisit": revisit[:1, :4]})     # T=4 drops both revisits
    full = (gen[1:], gt[1:], src[1:], {"revisit": revisit[1:]})                      # T=6
    padded = {"revisit": revisit, "valid": torch.tensor([4, T])}
    expected = run(short, full)
    assert expected["num_frames"] == 4 + T and expected["num_loop_pairs"] == 2
    assert same(run((gen, gt, src, padded)), expected)
    mask = torch.arange(T)[None] < torch.tensor([[4], [T]])
    assert same(run((gen, gt, src, {"revisit": revisit, "valid": mask})), expected)


def test_distributed_sync_sums_states_across_ranks():
    """compute() on rank 0 goes through torchmetrics' real sync path with a two-rank all_gather stand-in."""
    gt, revisit = looped_gt()
    gen, src = video(), video()
    rank1 = VideoMetrics()
    rank1.update(gen[1:, :5], gt[1:, :5], src[1:, :5], revisit=revisit[1:, :5])  # another rank, another T

    def all_gather(tensor, group=None):
        name = next(n for n in rank0._reductions if getattr(rank0, n) is tensor)
        return [tensor, getattr(rank1, name)]

    rank0 = VideoMetrics(dist_sync_fn=all_gather, distributed_available_fn=lambda: True)
    rank0.update(gen[:1], gt[:1], src[:1], revisit=revisit[:1])
    alone = run((gen[:1], gt[:1], src[:1], {"revisit": revisit[:1]}),
                (gen[1:, :5], gt[1:, :5], src[1:, :5], {"revisit": revisit[1:, :5]}))
    assert same(rank0.compute(), alone)
    assert int(rank0.frames) == T                    # local state restored after the synced compute


def test_scores_ignore_the_callers_bf16_autocast():
    gen, gt = video(), video()
    with torch.autocast("cpu", dtype=torch.bfloat16):      # what a bf16-mixed test_step runs under
        mixed = run((gen, gt, gt))
    assert same(mixed, run((gen, gt, gt)))


def test_compute_prefix_and_reset():
    m = VideoMetrics()
    m.update(video(), video(), video())
    r = m.compute(prefix="test/")
    assert set(r) >= {"test/psnr", "test/" + BASELINE + "psnr", "test/lpips_unavailable"}
    assert "psnr" in m.compute()                    # no cached prefixed result
    m.reset()
    assert int(m.frames) == 0


def test_bad_inputs_name_the_field():
    x = video()
    bad = torch.full((B, T), -1)
    bad[1, 3] = 3                                    # a step cannot revisit itself
    with pytest.raises(ValueError, match=r"revisit\[1, 3\] = 3"):
        VideoMetrics().update(x, x, x, revisit=bad)
    with pytest.raises(ValueError, match="ground_truth has shape"):
        VideoMetrics().update(x, x[:, :4], x)
    with pytest.raises(ValueError, match="valid is"):
        VideoMetrics().update(x, x, x, valid=torch.ones(B, T))


# ---------------------------------------------------------------- LPIPS (offline only)

@pytest.fixture
def no_download(monkeypatch, tmp_path):
    """Any attempt to fetch weights raises, and torch.hub points at an empty folder we check afterwards."""
    def refuse(*a, **k):
        raise AssertionError(f"a weight download was attempted: {a}")
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", refuse)
    hub, old = tmp_path / "hub", torch.hub.get_dir()
    torch.hub.set_dir(str(hub))
    yield
    torch.hub.set_dir(old)
    assert not hub.exists() or not any(hub.rglob("*")), "something was written to the torch.hub cache"


def test_lpips_unavailable_without_local_weights(no_download, tmp_path):
    r = run((video(), video(), video()))
    assert r["lpips"] is None and r[BASELINE + "lpips"] is None
    assert "--lpips_backbone_weights" in r["lpips_unavailable"] and "alexnet" in r["lpips_unavailable"]
    missing = tmp_path / "nope.pth"
    r = run((video(), video(), video()), lpips_backbone_weights=str(missing))
    assert r["lpips"] is None and str(missing) in r["lpips_unavailable"]
    assert "lpips" not in scalars(r) and "lpips_unavailable" not in scalars(r)


def test_lpips_loads_fake_local_backbone_weights_without_download(no_download, tmp_path):
    # FAKE weights: a randomly initialised AlexNet, saved only to exercise the offline loading path.
    # Scores from it are not LPIPS; real use passes torchvision's pretrained alexnet state_dict.
    fake = torchvision.models.alexnet(weights=None)
    path = tmp_path / "fake_alexnet_features.pth"
    torch.save(fake.features.state_dict(), path)
    net, reason = build_lpips(path)
    assert reason is None
    assert torch.equal(net.net.slice1[0].weight, fake.features[0].weight)      # trunk came from our file
    assert torch.equal(getattr(net.net.slice5, "10").bias, fake.features[10].bias)
    import lpips
    heads = torch.load(f"{lpips.__path__[0]}/weights/v0.1/alex.pth", map_location="cpu", weights_only=True)
    assert torch.equal(net.lins[2].model[1].weight, heads["lin2.model.1.weight"])  # heads from the package

    full = tmp_path / "fake_alexnet_full.pth"          # whole-model key layout ('features.N.*', 'classifier.*')
    torch.save({**{f"features.{k}": v for k, v in fake.features.state_dict().items()},
                "classifier.1.weight": torch.zeros(2, 2)}, full)   # a tiny classifier keeps the test fast
    m = VideoMetrics(lpips_backbone_weights=str(full))
    gt, gen = video(b=1, t=3, h=32, w=32), video(b=1, t=3, h=32, w=32)
    m.update(gen, gt, gt)
    r = m.compute()
    assert "lpips_unavailable" not in r and r["lpips"] > 0 and r[BASELINE + "lpips"] == pytest.approx(0.0, abs=1e-6)
    assert not any("lpips" in k or "slice" in k for k in m.state_dict())      # never enters a checkpoint

    torch.save({"weight": torch.zeros(3)}, tmp_path / "wrong.pth")
    with pytest.raises(ValueError, match="lpips_backbone_weights .*wrong.pth lacks"):
        build_lpips(tmp_path / "wrong.pth")


# ---------------------------------------------------------------- report and side-by-side video

def test_write_report_is_atomic_json(tmp_path):
    path = tmp_path / "eval" / "report.json"
    metrics = run((video(), video(), video()))
    extra = {"ckpt": tmp_path / "last.ckpt", "lengths": torch.tensor([4, 8]), "step": torch.tensor(7),
             "nan": float("nan")}
    assert write_report(path, metrics, extra) == path
    data = json.loads(path.read_text())
    assert data["metrics"]["psnr"] == pytest.approx(metrics["psnr"]) and data["metrics"]["lpips"] is None
    assert data["extra"] == {"ckpt": str(tmp_path / "last.ckpt"), "lengths": [4, 8], "step": 7, "nan": None}
    assert "torch" in data["versions"] and data["created_utc"]
    with pytest.raises(TypeError, match=r"extra\['obj'\]"):
        write_report(path, metrics, {"obj": object()})
    assert json.loads(path.read_text()) == data                    # a failed write left the old report intact
    assert [p.name for p in path.parent.iterdir()] == ["report.json"]


@pytest.mark.parametrize("gap", [2, 0])
def test_side_by_side_mp4_decodes_to_three_panels(tmp_path, gap):
    t = 5
    src, gen, gt = (torch.full((t, 3, 16, 24), v) for v in (-1.0, 0.0, 1.0))
    path = save_side_by_side(tmp_path / "sample.mp4", src, gen, gt, fps=8, gap=gap)
    with av.open(str(path)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(frames) == t and frames[0].shape == (16, 3 * 24 + 2 * gap, 3)
    row = torch.from_numpy(frames[2]).float().mean(dim=(0, 2))   # column brightness
    panel = [row[i * (24 + gap) + 4:i * (24 + gap) + 20].mean() for i in range(3)]
    assert panel[0] < 20 and abs(panel[1] - 127.5) < 10 and panel[2] > 235   # source | generated | ground truth


def test_to_uint8_frames_round_trip_and_shape_check():
    x = torch.tensor([-1.0, 0.0, 1.0, 2.0]).view(1, 1, 1, 4).expand(1, 3, 1, 4)
    assert to_uint8_frames(x)[0, 0, :, 0].tolist() == [0, 128, 255, 255]
    with pytest.raises(ValueError, match="generated is"):
        save_side_by_side("x.mp4", x, x[0], x, fps=8)
