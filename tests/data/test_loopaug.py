"""LoopAug: at every revisit (n, m) the independently rendered ground truth is identical, for every strategy."""
import json

import pytest
import torch

from realcam.data.loopaug import LoopSequence, revisit_map, triangle
from realcam.data.synthetic import SyntheticSource
from realcam.registry import LOOPAUG_STRATEGIES

H, W = 20, 24
SOURCE = SyntheticSource(num_cameras=3, num_frames=6, height=H, width=W, seed=11)


class ClipOnly:
    """The synthetic source seen through clips only, like a recorded multiview folder."""

    renders_novel_views = False

    def clip(self, index):
        return SOURCE.clip(index)


def _make(name, source, length=9, seed=0, **kw):
    strategy = LOOPAUG_STRATEGIES.build(name, length=min(length, 6) if name == "none" else length, **kw)
    return strategy(source, 2, torch.Generator().manual_seed(seed))


def _rerender(seq: LoopSequence, n: int) -> torch.Tensor:
    """Ground truth for target step n, rendered alone from the recorded (time, pose, K)."""
    t = torch.tensor([seq.metadata["times"][n] / SOURCE.fps], dtype=torch.float64)
    return SOURCE.scene(seq.metadata["source_index"]).render(seq.target_c2w[n:n + 1], seq.target_K[n:n + 1], t, H, W)[0]


STRATEGIES = LOOPAUG_STRATEGIES.list()


def test_registry_has_the_required_strategies():
    assert {"none", "pingpong", "orbit_return", "camera_cycle"} <= set(STRATEGIES)


@pytest.mark.parametrize("name", STRATEGIES)
@pytest.mark.parametrize("backed", ["renderer", "clip_only"])
def test_revisits_have_identical_ground_truth(name, backed):
    seq = _make(name, SOURCE if backed == "renderer" else ClipOnly())
    assert seq.strategy == name and seq.scene_id == SOURCE.scene_id(2)
    if name == "none":
        assert seq.revisit == {}
    else:
        assert len(seq.revisit) >= 1, f"{name} made no loop"
    truth = {n: _rerender(seq, n) for n in range(seq.num_steps)}
    for n in range(seq.num_steps):                                # frames are the renderer's ground truth
        assert torch.equal(seq.target_frames[n], truth[n]), f"step {n} differs from its own re-render"
    for n, m in seq.revisit.items():
        assert m < n
        assert torch.equal(truth[n], truth[m]), f"revisit {n}->{m}: rendered ground truth differs"
        assert torch.equal(seq.target_c2w[n], seq.target_c2w[m]) and torch.equal(seq.target_K[n], seq.target_K[m])
        assert seq.metadata["times"][n] == seq.metadata["times"][m]
        if name in ("pingpong", "camera_cycle"):                 # the source revisits too: same camera and time
            assert torch.equal(seq.source_frames[n], seq.source_frames[m])
            assert torch.equal(seq.source_c2w[n], seq.source_c2w[m])
    # steps in different states really differ
    first = {n: seq.revisit.get(n, n) for n in range(seq.num_steps)}
    pairs = [(a, b) for a in range(seq.num_steps) for b in range(a) if first[a] != first[b]]
    same = sum(torch.equal(seq.target_frames[a], seq.target_frames[b]) for a, b in pairs)
    assert same <= 0.1 * len(pairs), f"{same}/{len(pairs)} non-revisit pairs have identical frames"


@pytest.mark.parametrize("name", STRATEGIES)
def test_deterministic_per_generator_seed(name):
    a, b = _make(name, SOURCE, seed=5), _make(name, SOURCE, seed=5)
    assert torch.equal(a.target_frames, b.target_frames) and torch.equal(a.source_c2w, b.source_c2w)
    assert a.revisit == b.revisit and a.metadata == b.metadata
    others = [_make(name, SOURCE, seed=s) for s in range(6, 9)]
    assert any(not torch.equal(o.target_frames, a.target_frames) for o in others)


@pytest.mark.parametrize("length", [1, 4, 13])
def test_variable_length(length):
    for name in ("pingpong", "orbit_return", "camera_cycle"):
        seq = _make(name, SOURCE, length=length)
        assert seq.num_steps == length and seq.target_frames.shape == (length, H, W, 3)
        assert all(0 <= m < n < length for n, m in seq.revisit.items())


def test_strategy_options():
    seq = _make("camera_cycle", SOURCE, length=8, time_mode="frozen", dwell=2)
    assert len(set(seq.metadata["times"])) == 1
    assert seq.metadata["target_cameras"][:2] == [seq.metadata["target_cameras"][0]] * 2
    assert seq.revisit[1] == 0                                     # dwelling on one camera at frozen time
    one_lap = _make("orbit_return", SOURCE, length=7, laps=1, path="orbit")
    assert one_lap.revisit == {6: 0}                               # the closed path returns to its start
    back = _make("orbit_return", SOURCE, length=7, laps=1, path="pingpong_pan", degrees=20)
    assert back.revisit == {4: 2, 5: 1, 6: 0}
    multi = _make("pingpong", SOURCE, length=13, span=3)
    assert multi.metadata["times"][:5] == [multi.metadata["times"][0] + d for d in (0, 1, 2, 1, 0)]
    with pytest.raises(ValueError, match="span=7"):
        _make("pingpong", SOURCE, length=9, span=7)
    with pytest.raises(ValueError, match="length=8 at stride=1 needs 8 frames"):
        LOOPAUG_STRATEGIES.build("none", length=8)(SOURCE, 0)
    with pytest.raises(ValueError, match="path='zigzag'"):
        LOOPAUG_STRATEGIES.build("orbit_return", path="zigzag")
    with pytest.raises(ValueError, match="length=0"):
        LOOPAUG_STRATEGIES.build("pingpong", length=0)


def test_triangle_and_revisit_map():
    assert [triangle(s, 3) for s in range(7)] == [0, 1, 2, 1, 0, 1, 2]
    assert [triangle(s, 1) for s in range(3)] == [0, 0, 0]
    c2w = torch.eye(4).repeat(4, 1, 1)
    c2w[1, 0, 3] = 1.0
    K = torch.eye(3).repeat(4, 1, 1)
    assert revisit_map([0, 0, 0, 1], c2w, K) == {2: 0}             # same time and pose; step 3 has another time
    same = torch.eye(4).repeat(2, 1, 1)
    assert revisit_map([0, 0], same, K[:2]) == {1: 0}
    assert revisit_map([0, 0], same, K[:2], cams=[0, 1]) == {}     # recorded video: different cameras never match


def test_loop_sequence_validation_and_dict_round_trip():
    seq = _make("pingpong", SOURCE, length=5)
    d = seq.to_dict()
    assert d["source_frames"].dtype.name == "uint8" and d["target_c2w"].shape == (5, 4, 4)
    json_keys = json.loads(json.dumps({str(k): v for k, v in d["revisit"].items()}))
    back = LoopSequence.from_dict(dict(d, revisit=json_keys, metadata=json.loads(json.dumps(d["metadata"]))))
    assert back.revisit == seq.revisit and torch.equal(back.target_frames, seq.target_frames)
    assert back.metadata == seq.metadata and (back.num_steps, back.image_size) == (5, (H, W))
    fields = dict(source_frames=seq.source_frames, target_frames=seq.target_frames, source_c2w=seq.source_c2w,
                  target_c2w=seq.target_c2w, source_K=seq.source_K, target_K=seq.target_K)
    with pytest.raises(ValueError, match=r"revisit\[2\] = 3 is invalid"):
        LoopSequence(**fields, revisit={2: 3})
    with pytest.raises(ValueError, match=r"revisit\[9\]"):
        LoopSequence(**fields, revisit={9: 0})
    with pytest.raises(ValueError, match="target_frames shape"):
        LoopSequence(**dict(fields, target_frames=seq.target_frames[:4]))
    with pytest.raises(TypeError, match="source_frames has dtype"):
        LoopSequence(**dict(fields, source_frames=seq.source_frames.float()))
    with pytest.raises(ValueError, match=r"target_K has shape \(4, 3, 3\)"):
        LoopSequence(**dict(fields, target_K=seq.target_K[:4]))
    bad = seq.target_c2w.clone()
    bad[3, :3, :3] *= 2.0
    with pytest.raises(ValueError, match=r"target_c2w\[3\]"):
        LoopSequence(**dict(fields, target_c2w=bad))
