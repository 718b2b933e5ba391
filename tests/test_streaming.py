"""StreamingGenerator: the push API, equality with the offline causal rollout, input checks that keep the stream
intact, and bundles (export, load, ``realcam export`` from a training checkpoint)."""
from collections import deque
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from realcam import geometry
from realcam.modules.backbone import CrossFrameDiT
from realcam.modules.codecs import PixelCodec
from realcam.modules.cond import Cond
from realcam.registry import BACKBONES
from realcam.bundle import bundled_model, export_bundle, load_bundle
from realcam.streaming import StreamingGenerator, StreamStats
from realcam.rollout import causal_rollout

TINY = dict(in_channels=12, dim=24, depth=2, heads=2, ffn_dim=48, patch=[1, 2, 2], freq_dim=32,
            attention_mode="causal", window_chunks=2, prediction="x0")
SIZE = 16


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_network(chunk_frames: int = 1, seed: int = 1, name: str = "dit", **overrides) -> CrossFrameDiT:
    """A registered backbone at tiny size, random weights everywhere (zero-initialized heads would make every
    output equal)."""
    net = BACKBONES.build(name, **{**TINY, "chunk_frames": chunk_frames, **overrides})
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return net


def bundle_config(size: int = SIZE, **network_overrides) -> dict:
    return {"network": {"class_path": "realcam.modules.backbone.CrossFrameDiT",
                        "init_args": {**TINY, **network_overrides}},
            "codec": {"class_path": "realcam.modules.codecs.PixelCodec", "init_args": {"factor": 2}},
            "shift": 3.0, "denoising_steps": [1000, 750, 500, 250], "pose_reference": "current_source",
            "image_size": [size, size], "fps": 8.0, "role": "student",
            "provenance": {"commands": ["tests: random tiny network"]}}


def make_bundle(out: Path, size: int = SIZE, seed: int = 1) -> Path:
    """A bundle of a randomly initialized tiny student (tests only; never shipped)."""
    return export_bundle(tiny_network(seed=seed), out, bundle_config(size))


def make_stream(chunk_frames: int = 1, **kw) -> StreamingGenerator:
    return StreamingGenerator(tiny_network(chunk_frames), PixelCodec(2), image_size=(SIZE, SIZE), seed=7, **kw)


def inputs(T: int = 5, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    frames = torch.randint(0, 256, (T, SIZE, SIZE, 3), dtype=torch.uint8, generator=g)
    return frames, geometry.arc(T, 25.0)


def offline(gen: StreamingGenerator, frames: torch.Tensor, rel: torch.Tensor, seed: int = 7) -> torch.Tensor:
    """The offline causal rollout over the whole clip, decoded: [T, 3, H, W]. The whole clip is encoded at once,
    and latent frame i takes the pose of video frame ``codec.pose_frames`` (i itself for a frame-wise codec)."""
    video = frames.permute(0, 3, 1, 2).float() / 127.5 - 1
    latents = gen.codec.encode(video[None])
    F = latents.shape[1]
    K = gen.K.expand(1, F, 3, 3)
    cond = Cond(source=latents, target_c2w=rel[gen.codec.pose_frames(F)][None], target_K=K, source_K=K,
                image_size=tuple(video.shape[-2:]), text=gen.text)
    with torch.no_grad():
        roll = causal_rollout(gen.network, cond, gen.sigmas, torch.Generator().manual_seed(seed))
    return gen.codec.decode(roll.x0)[0].clamp(-1, 1)


def push_all(gen: StreamingGenerator, frames, poses) -> torch.Tensor:
    outs = [gen.push(f, c2w) for f, c2w in zip(frames, poses)]
    outs = [o if o.ndim == 4 else o[None] for o in outs if o is not None]
    return torch.cat(outs)


# ------------------------------------------------------------------------------------------------ push API
STREAM_CASES = [(name, 1, {}) for name in BACKBONES.list()] + [
    ("dit", 2, {}), ("dit", 1, dict(reproject_depths=[1.0, 5.0])),
    ("dit", 1, dict(reproject_depths=[1.0, 5.0], reproject_space_to_depth=2, reproject_blend=True))]


@pytest.mark.parametrize("name,chunk_frames,reproject,fuse",
                         [(n, c, r, f) for n, c, r in STREAM_CASES for f in (False, True)])
def test_stream_equals_offline_causal_rollout(name, chunk_frames, reproject, fuse):
    """Chunk by chunk through rollout_chunk with the generator seeded at reset == causal_rollout, bit for bit
    (the sink + window cache evicts after 3 chunks, so eviction is covered), for every registered backbone;
    also with the source reprojection (and its blend head), whose per-chunk value the streaming passes share.
    With the cache pass fused into the next chunk's first pass: equal to float rounding, and the cache commits
    one chunk behind."""
    frames, poses = inputs(T=6)
    network = tiny_network(chunk_frames, name=name, **reproject)
    text = None if network.text_dim is None else torch.randn(5, network.text_dim)      # Wan: with a prompt
    gen = StreamingGenerator(network, PixelCodec(2), image_size=(SIZE, SIZE), seed=7, fuse_cache_pass=fuse, text=text)
    outs = [gen.push(f, c2w) for f, c2w in zip(frames, poses)]
    if chunk_frames == 1:
        assert all(o.shape == (3, SIZE, SIZE) and o.dtype == torch.float32 for o in outs)
    else:   # push buffers: None until the chunk is complete, then the chunk's frames
        assert [o is None for o in outs] == [True, False] * 3 and outs[1].shape == (2, 3, SIZE, SIZE)
    streamed = torch.cat([o if o.ndim == 4 else o[None] for o in outs if o is not None])
    if fuse:
        torch.testing.assert_close(streamed, offline(gen, frames, poses), atol=1e-4, rtol=0)
    else:
        assert torch.equal(streamed, offline(gen, frames, poses))
    assert gen.stats.frames == 6 and gen.stats.chunks == 6 // chunk_frames
    assert gen.cache.state()["committed"] == 6 // chunk_frames - fuse     # fused: the last chunk's pass waits


def test_push_chunk_and_float_frames_equal_push():
    frames, poses = inputs(T=4)
    ref = push_all(make_stream(2), frames, poses)
    gen = make_stream(2)
    floats = frames.permute(0, 3, 1, 2).float() / 127.5 - 1             # float [3, H, W] in [-1, 1]
    out = torch.cat([gen.push_chunk(floats[i:i + 2], poses[i:i + 2]) for i in (0, 2)])
    assert torch.equal(out, ref)
    assert StreamingGenerator.to_uint8(out).shape == (4, SIZE, SIZE, 3)


def test_pose_change_mid_stream_is_the_control():
    """Changing target_c2w at step 2 leaves frames 0-1 alone and changes frame 2 on; the result is the offline
    rollout of the edited trajectory. World poses with source_c2w give the same frames as relative poses."""
    frames, _ = inputs(T=4)
    still = geometry.static(4)
    steered = still.clone()
    steered[2:] = geometry.pan(4, 30.0)[-1]                            # the user turns the camera at step 2
    a = push_all(make_stream(), frames, still)
    gen = make_stream()
    b = push_all(gen, frames, steered)
    assert torch.equal(a[:2], b[:2]) and not torch.allclose(a[2:], b[2:], atol=1e-3)
    torch.testing.assert_close(b, offline(gen, frames, steered), atol=1e-4, rtol=0)    # fused cache pass: rounding
    src = geometry.dolly(4, 0.5) @ geometry.pan(4, -10.0)                # a moving source camera (world)
    world = make_stream()
    c = torch.cat([world.push(f, s @ r, source_c2w=s)[None] for f, s, r in zip(frames, src, steered)])
    torch.testing.assert_close(c, b, atol=1e-4, rtol=0)


BAD_PUSHES = {
    "wrong frame size": (lambda f, c2w: (f[:8], c2w), ValueError, "is 8x16 but the stream runs at 16x16"),
    "float frame in 0..255": (lambda f, c2w: (f.permute(2, 0, 1).float(), c2w), ValueError, r"\[-1, 1\]"),
    "NaN pose": (lambda f, c2w: (f, torch.full((4, 4), float("nan"))), ValueError, "target_c2w"),
    "non-rigid pose": (lambda f, c2w: (f, torch.diag(torch.tensor([1.0, 1.0, -1.0, 1.0]))), ValueError,
                       "target_c2w.*rigid"),
    "scaled pose": (lambda f, c2w: (f, c2w * torch.tensor([2.0, 2.0, 2.0, 1.0])[:, None]), ValueError, "target_c2w"),
    "pose shape": (lambda f, c2w: (f, c2w[:3]), ValueError, r"target_c2w has shape \(3, 4\)"),
}


@pytest.mark.parametrize("chunk_frames", [1, 2])
@pytest.mark.parametrize("bad", list(BAD_PUSHES))
def test_rejected_push_keeps_the_stream_intact(bad, chunk_frames):
    """After a rejected push the next valid push gives exactly what it would have given without it."""
    make, error, match = BAD_PUSHES[bad]
    frames, poses = inputs(T=4)
    ref = push_all(make_stream(chunk_frames), frames, poses)
    gen = make_stream(chunk_frames)
    outs = [gen.push(frames[0], poses[0])]
    with pytest.raises(error, match=match):
        gen.push(*make(frames[1], poses[1]))
    outs += [gen.push(f, c2w) for f, c2w in zip(frames[1:], poses[1:])]
    outs = torch.cat([o if o.ndim == 4 else o[None] for o in outs if o is not None])
    assert torch.equal(outs, ref)


class _Interrupted(Exception):
    pass


def fail_on_call(obj, name: str, call: int) -> None:
    """Make ``obj.name`` raise on its ``call``-th call from now on (an instance attribute over the method)."""
    original, count = getattr(obj, name), [0]

    def wrapper(*args, **kwargs):
        count[0] += 1
        if count[0] == call:
            raise _Interrupted(f"{name} call {call}")
        return original(*args, **kwargs)
    setattr(obj, name, wrapper)


# where a push is interrupted: (attribute, which call); a fused stream's first pass is commit_and_forward
FAILURES = {"first pass": ("forward", 1), "third pass": ("forward", 3), "decode": ("decode", 1)}


@pytest.mark.parametrize("chunk_frames,network,fuse", [(1, {}, False), (1, {}, True), (2, {}, True),
                                                       (2, {}, False)])
@pytest.mark.parametrize("where", list(FAILURES))
def test_failure_inside_generation_keeps_the_stream_intact(where, chunk_frames, network, fuse):
    """A push interrupted inside generation (Ctrl-C, out of memory) leaves the stream as it was, even after a
    commit (the fused pass commits the previous chunk first; without fusion the chunk commits before decode):
    retrying the same frame and going on gives the uninterrupted stream's frames, bit for bit."""
    frames, poses = inputs(T=6)
    make = lambda: StreamingGenerator(tiny_network(chunk_frames, **network), PixelCodec(2),  # noqa: E731
                                      image_size=(SIZE, SIZE), seed=7, fuse_cache_pass=fuse)
    ref = push_all(make(), frames, poses)
    gen = make()
    n = 2 * chunk_frames - 1          # the next push completes the second chunk
    outs = [gen.push(f, c2w) for f, c2w in zip(frames[:n], poses[:n])]
    name, call = FAILURES[where]
    if fuse and where == "first pass":
        name = "commit_and_forward"
    target = gen.codec if name == "decode" else gen.network
    fail_on_call(target, name, call)
    cache_before, stats = gen.cache.state(), gen.stats.as_dict()
    staged_before = (gen.cache._staged_info, list(gen.cache._staged))
    with pytest.raises(_Interrupted):
        gen.push(frames[n], poses[n])
    delattr(target, name)
    assert gen.stats.frames == stats["frames"] and gen.stats.chunks == stats["chunks"]
    assert gen.cache.state() == cache_before
    info, staged = staged_before                 # the chunk state as before: nothing half-staged
    assert gen.cache._staged_info == info
    assert all(a is b for a, b in zip(gen.cache._staged, staged))
    outs += [gen.push(f, c2w) for f, c2w in zip(frames[n:], poses[n:])]
    assert torch.equal(torch.cat([o if o.ndim == 4 else o[None] for o in outs if o is not None]), ref)


@pytest.mark.parametrize("chunk_frames,network,fuse", [(1, {}, True), (1, {}, False), (2, {}, True),
                                                       (2, dict(reproject_depths=[1.0, 5.0]), False)])
def test_random_operation_sequences_equal_a_replay_of_the_valid_pushes(chunk_frames, network, fuse):
    """Random operations: pushes with changing poses, rejected pushes, pushes interrupted inside generation
    (network or codec, first to third call), resets. Between two resets the frames that come out equal those of
    a fresh stream fed only the pushes that went through, bit for bit."""
    make = lambda: StreamingGenerator(tiny_network(chunk_frames, **network), PixelCodec(2),  # noqa: E731
                                      image_size=(SIZE, SIZE), seed=7, fuse_cache_pass=fuse)
    rnd, g = np.random.default_rng(0), torch.Generator().manual_seed(0)
    gen, segments, interrupted = make(), [([], [])], 0
    for _ in range(90):
        op = rnd.random()
        frame = torch.randint(0, 256, (SIZE, SIZE, 3), dtype=torch.uint8, generator=g)
        pose = geometry.arc(8, float(rnd.uniform(-40, 40)))[int(rnd.integers(8))]
        if op < 0.04:
            gen.reset()
            segments.append(([], []))
            continue
        if op < 0.1:
            with pytest.raises(ValueError):
                gen.push(frame[:4], pose)
            continue
        target = None
        if op < 0.4:
            name = str(rnd.choice(["forward", "commit_and_forward", "decode"]))
            target = gen.codec if name == "decode" else gen.network
            fail_on_call(target, name, int(rnd.integers(1, 4)))
        try:
            y = gen.push(frame, pose)
        except _Interrupted:
            interrupted += 1
            continue
        finally:
            if target is not None:
                delattr(target, name)
        accepted, outs = segments[-1]
        accepted.append((frame, pose))
        if y is not None:
            outs.append(y if y.ndim == 4 else y[None])
    assert interrupted >= 5 and len(segments) >= 2
    for i, (accepted, outs) in enumerate(segments):
        ref = make()
        want = [y for y in (ref.push(f, p) for f, p in accepted) if y is not None]
        assert len(want) == len(outs) and all(torch.equal(a if a.ndim == 4 else a[None], b)
                                              for a, b in zip(want, outs)), f"segment {i}"


def test_push_after_close_is_rejected_until_reset():
    frames, poses = inputs(T=2)
    ref = push_all(make_stream(), frames, poses)
    gen = make_stream()
    first = gen.push(frames[0], poses[0])
    gen.close()
    with pytest.raises(RuntimeError, match="closed.*reset"):
        gen.push(frames[1], poses[1])
    assert torch.equal(first, ref[0])
    gen.reset()                                            # a new stream, same seed: same frames again
    assert torch.equal(push_all(gen, frames, poses), ref)


def test_reset_options_and_bad_reset_keep_the_stream():
    gen = make_stream()
    with pytest.raises(ValueError, match="image_size"):
        gen.reset(image_size=(15, 16))
    with pytest.raises(ValueError, match="K"):
        gen.reset(K=torch.tensor([[-1.0, 0, 8], [0, 10, 8], [0, 0, 1]]))
    assert gen.image_size == (SIZE, SIZE)
    gen.reset(fov_deg=90.0, image_size=(8, 12), seed=3)
    torch.testing.assert_close(gen.K, geometry.fov_intrinsics(8, 12, 90.0))
    assert gen.push(np.zeros((8, 12, 3), np.uint8), np.eye(4)).shape == (3, 8, 12)
    with pytest.warns(UserWarning, match="trained with 'current_source'"):
        gen.reset(pose_reference="first_source")


def test_options_steps_cache_dtype_and_stats():
    gen = make_stream(steps=2, sink=1, window=1, dtype="bf16")
    assert gen.schedule.denoising_steps == (1000, 500) and len(gen.sigmas) == 2
    assert (gen.cache.sink, gen.cache.window) == (1, 1)
    frames, poses = inputs(T=3)
    out = push_all(gen, frames, poses)
    assert out.dtype == torch.float32 and torch.isfinite(out).all() and out.abs().max() <= 1
    s = gen.stats.as_dict()
    assert s["pushes"] == s["frames"] == 3 and len(s["latency_ms"]) == 3
    assert 0 < s["latency_ms_p50"] <= s["latency_ms_p90"] <= s["latency_ms_max"] and s["fps"] > 0
    assert s["time_to_first_frame_ms"] == pytest.approx(s["latency_ms"][0], rel=0.5)
    with pytest.raises(ValueError, match="bidirectional"):
        StreamingGenerator(tiny_network(attention_mode="bidirectional"), PixelCodec(2))
    stats = StreamStats(latency_ms=deque(maxlen=2))   # a long stream keeps the last LATENCY_HISTORY latencies
    for ms in (5.0, 9.0, 1.0, 2.0):
        stats.add(ms)
    stats.frames = 4
    d = stats.as_dict()
    assert d["latency_ms"] == [1.0, 2.0] and d["latency_ms_first_push"] == 2 and d["pushes"] == 4
    assert d["latency_ms_mean"] == 4.25 and d["latency_ms_max"] == 9.0 and d["fps"] == pytest.approx(4 / 0.017)
    assert d["latency_ms_p50"] == 1.5
    assert gen.fuse_cache_pass and not make_stream(fuse_cache_pass=False).fuse_cache_pass
    no_fusion = tiny_network()
    no_fusion.commit_and_forward = None                 # a network without the fused pass
    assert not StreamingGenerator(no_fusion, PixelCodec(2)).fuse_cache_pass
    with pytest.raises(ValueError, match="fuse_cache_pass=True needs"):
        StreamingGenerator(no_fusion, PixelCodec(2), fuse_cache_pass=True)


def test_bad_device_is_named_before_anything_moves():
    with pytest.raises(ValueError, match="device='gpu' is not a torch device: use cpu, cuda"):
        make_stream(device="gpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="device='cuda' but torch sees no CUDA GPU.*device=cpu"):
            make_stream(device="cuda")


# ------------------------------------------------------------------------------------------------ bundles
def test_bundle_round_trip(tmp_path):
    net = tiny_network(seed=4)
    path = export_bundle(net, tmp_path / "b", bundle_config())
    assert sorted(p.name for p in path.iterdir()) == ["config.yaml", "model.safetensors"]
    bundle = load_bundle(path)
    assert bundle.config["role"] == "student" and not any(p.requires_grad for p in bundle.network.parameters())
    frames, poses = inputs(T=3)
    direct = push_all(StreamingGenerator(net, PixelCodec(2), image_size=(SIZE, SIZE)), frames, poses)
    loaded = StreamingGenerator.from_checkpoint(path)
    assert loaded.image_size == (SIZE, SIZE) and loaded.fps == 8.0
    assert torch.equal(push_all(loaded, frames, poses), direct)
    with pytest.raises(FileExistsError, match="overwrite"):
        export_bundle(net, path, bundle_config())


def test_truncated_weights_or_broken_config_are_named_with_the_fix(tmp_path):
    """A bundle or checkpoint cut short (an interrupted copy), or a broken bundle config, gives an error naming
    the file, not a traceback from the safetensors, zip or YAML reader."""
    path = export_bundle(tiny_network(seed=4), tmp_path / "b", bundle_config())
    weights = path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(ValueError, match=r"model\.safetensors.*cannot be read.*truncated, corrupt.*realcam export"):
        StreamingGenerator.from_checkpoint(path)
    (path / "config.yaml").write_text((path / "config.yaml").read_text() + "network: [unclosed\n")
    with pytest.raises(ValueError, match=r"config\.yaml is not valid YAML"):
        StreamingGenerator.from_checkpoint(path)
    (path / "config.yaml").write_text("- a list\n")
    with pytest.raises(ValueError, match=r"config\.yaml holds a list"):
        StreamingGenerator.from_checkpoint(path)
    config, ckpt = write_training_run(tmp_path / "run", tiny_network(seed=5))
    ckpt.write_bytes(ckpt.read_bytes()[:2000])
    with pytest.raises(ValueError, match=r"last\.ckpt.*cannot be read"):
        StreamingGenerator.from_checkpoint(ckpt, config)


def write_training_run(folder: Path, net: torch.nn.Module) -> tuple[Path, Path]:
    """A student-style training YAML and a Lightning-style checkpoint (EMA and raw generator weights)."""
    folder.mkdir(parents=True, exist_ok=True)
    cfg = bundle_config()
    config = {"model": {"class_path": "realcam.systems.OdeInitModule",
                        "init_args": {"generator": cfg["network"], "codec": cfg["codec"], "shift": 3.0,
                                      "denoising_steps": [1000, 750, 500, 250], "pose_reference": "current_source"}},
              "data": {"init_args": {"image_size": [SIZE, SIZE]}}}
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    state = {**{f"ema.shadow.{k}": v for k, v in net.state_dict().items()},
             **{f"generator.{k}": torch.zeros_like(v) for k, v in net.state_dict().items()}}
    torch.save({"state_dict": state, "global_step": 3}, folder / "last.ckpt")
    return folder / "config.yaml", folder / "last.ckpt"


@pytest.fixture
def exported_bundle(tmp_path) -> tuple[Path, torch.nn.Module]:
    """A bundle written by `realcam export` from a (fake, tiny) training run; returns it and the EMA network."""
    from realcam.cli import main

    net = tiny_network(seed=5)
    config, ckpt = write_training_run(tmp_path / "run", net)
    (tmp_path / "commands.txt").write_text("realcam fit --config run/config.yaml\n")
    assert main(["export", "--config", str(config), "--ckpt", str(ckpt), "--out", str(tmp_path / "bundle"),
                 "--commands-file", str(tmp_path / "commands.txt")]) == 0
    return tmp_path / "bundle", net


def test_realcam_export_from_training_run(exported_bundle, tmp_path):
    path, net = exported_bundle
    cfg = yaml.safe_load((path / "config.yaml").read_text())
    assert cfg["role"] == "student" and cfg["image_size"] == [SIZE, SIZE] and cfg["pose_reference"] == "current_source"
    assert cfg["provenance"]["source_ckpt"].endswith("last.ckpt")
    assert cfg["provenance"]["commands"][0] == "realcam fit --config run/config.yaml"
    assert cfg["provenance"]["commands"][1].startswith("realcam export")
    frames, poses = inputs(T=2)
    ema = push_all(StreamingGenerator(net, PixelCodec(2), image_size=(SIZE, SIZE)), frames, poses)
    assert torch.equal(push_all(StreamingGenerator.from_checkpoint(path), frames, poses), ema)   # EMA weights
    run = tmp_path / "run"
    direct = StreamingGenerator.from_checkpoint(run / "last.ckpt", config=run / "config.yaml")
    assert torch.equal(push_all(direct, frames, poses), ema)
    with pytest.raises(ValueError, match="config="):
        StreamingGenerator.from_checkpoint(run / "last.ckpt")


def test_missing_bundled_asset_names_folder_and_command(monkeypatch, tmp_path):
    import realcam.bundle as bundle_module

    monkeypatch.setattr(bundle_module, "ASSETS", tmp_path / "assets")
    with pytest.raises(FileNotFoundError) as err:
        bundled_model("tiny_student")
    msg = str(err.value)
    assert str(tmp_path / "assets" / "tiny_student") in msg and "realcam export" in msg and "tiny_dmd.yaml" in msg


def test_prompt_is_required_by_a_text_backbone_and_a_change_applies_from_the_next_chunk():
    """A Wan-style network needs a prompt; its text K/V are computed once (one text-embedder call for a whole
    stream) and a new prompt mid-stream changes the frames from the next push on, as a fresh stream with that
    prompt would (the fused pass falls back to a separate cache pass across the change)."""
    network = tiny_network(name="tiny-wan")
    with pytest.raises(ValueError, match="reads text"):
        StreamingGenerator(network, PixelCodec(2), image_size=(SIZE, SIZE))
    a, b = torch.randn(5, network.text_dim), torch.randn(3, network.text_dim)
    frames, poses = inputs(T=4)
    calls = []
    network.text_embed.register_forward_hook(lambda *args: calls.append(1))
    gen = StreamingGenerator(network, PixelCodec(2), image_size=(SIZE, SIZE), seed=7, text=a)
    first = [gen.push(f, p) for f, p in zip(frames[:2], poses[:2])]
    assert len(calls) == 1, "one text embedding for every pass and chunk of one prompt"
    gen.set_prompt(b)
    changed = [gen.push(f, p) for f, p in zip(frames[2:], poses[2:])]
    assert len(calls) == 2
    same = StreamingGenerator(network, PixelCodec(2), image_size=(SIZE, SIZE), seed=7, text=a)
    kept = [same.push(f, p) for f, p in zip(frames, poses)]
    assert all(torch.equal(x, y) for x, y in zip(first, kept[:2]))
    assert not torch.allclose(changed[0], kept[2], atol=1e-3)

