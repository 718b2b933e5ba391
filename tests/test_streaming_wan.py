"""StreamingGenerator through a codec that compresses time (the tiny random Wan VAE): chunks of latent frames
take 1 + 4 (c - 1) video frames, then 4 c; the stream equals the offline path (whole-clip encode, causal
rollout, whole-clip decode); a failed chunk restores the VAE's feature caches; the cost per chunk stops growing."""
import pytest
import torch

from realcam import geometry
from realcam.modules.wan_vae import WanCodec
from realcam.streaming import StreamingGenerator
from tests.test_streaming import _Interrupted, fail_on_call, offline, tiny_network

SIZE = 16
TEXT_DIM = 32          # tiny-wan's

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def wan_codec(tiny_wan_vae_dir) -> WanCodec:
    return WanCodec(str(tiny_wan_vae_dir))


def wan_stream(codec: WanCodec, chunk_frames: int, **kw) -> StreamingGenerator:
    """tiny-wan (16 latent channels, text) with ``chunk_frames`` latent frames per chunk, random weights."""
    network = tiny_network(chunk_frames, name="tiny-wan", in_channels=16)
    gen = StreamingGenerator(network, codec, image_size=(SIZE, SIZE), seed=7, text=torch.zeros(1, TEXT_DIM), **kw)
    gen.set_prompt(torch.randn(4, TEXT_DIM, generator=torch.Generator().manual_seed(3)))
    return gen


def clip(T: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (T, SIZE, SIZE, 3), dtype=torch.uint8, generator=g), geometry.arc(T, 30.0)


def push_all(gen: StreamingGenerator, frames, poses) -> tuple[list, torch.Tensor]:
    outs = [gen.push(f, p) for f, p in zip(frames, poses)]
    return outs, torch.cat([o for o in outs if o is not None])


@pytest.mark.parametrize("fuse", [False, True])
def test_wan_stream_equals_whole_clip_encode_rollout_decode(wan_codec, fuse):
    """4 chunks of 2 latent frames (the sink + window cache evicts): pushes of 5, then 8 frames each come back
    as 5, then 8 frames, equal to encoding the whole 29-frame clip, the causal rollout over its 8 latent frames
    with the poses of frames 0, 4, 8, ... and decoding the whole result."""
    gen = wan_stream(wan_codec, 2, fuse_cache_pass=fuse)
    assert [gen.chunk_frames_at(i) for i in (0, 2, 4)] == [5, 8, 8]
    frames, poses = clip(29)
    outs, streamed = push_all(gen, frames, poses)
    assert [i for i, o in enumerate(outs) if o is not None] == [4, 12, 20, 28]
    assert [len(o) for o in outs if o is not None] == [5, 8, 8, 8] and streamed.shape == (29, 3, SIZE, SIZE)
    # float32 rounding: the VAE's chunked calls differ from its whole-clip ones by ~1e-6 (tiny VAE, measured)
    torch.testing.assert_close(streamed, offline(gen, frames, poses), atol=1e-4, rtol=0)
    assert gen.stats.frames == 29 and gen.stats.chunks == 4 and gen.latent_frames_done == 8
    again = wan_stream(wan_codec, 2, fuse_cache_pass=fuse)            # push_chunk takes each chunk whole
    bounds = [0, 5, 13, 21, 29]
    chunks = [again.push_chunk(frames[a:b], poses[a:b]) for a, b in zip(bounds, bounds[1:])]
    assert torch.equal(torch.cat(chunks), streamed)
    with pytest.raises(ValueError, match="push_chunk takes the next chunk's 5 frames"):
        wan_stream(wan_codec, 2).push_chunk(frames[:4], poses[:4])


def test_a_chunk_is_posed_by_the_frames_pose_frames_names(wan_codec):
    """Chunk 1 of a 1-latent-frame stream holds frames 1-4 and takes frame 4's pose (4i, ReCamMaster's
    cameras[::4]): editing frame 2's pose changes nothing, editing frame 4's changes the chunk."""
    frames, poses = clip(9)
    _, ref = push_all(wan_stream(wan_codec, 1), frames, poses)
    for edited, changes in ((2, False), (4, True)):
        moved = poses.clone()
        moved[edited] = geometry.pan(2, 40.0)[-1]
        _, out = push_all(wan_stream(wan_codec, 1), frames, moved)
        assert torch.equal(out[:1], ref[:1])
        assert torch.equal(out[1:5], ref[1:5]) != changes


FAILURES = {"encoder mid-chunk": ("encoder", 2), "decoder mid-chunk": ("decoder", 2), "network": ("network", 1)}


@pytest.mark.parametrize("where", list(FAILURES))
def test_failure_mid_chunk_restores_the_vae_feature_caches(wan_codec, where):
    """A chunk interrupted after the VAE coded part of it (its feature caches and frame counters moved on) leaves
    the stream as it was: pushing the same frame again and going on gives the uninterrupted frames, bit for bit."""
    frames, poses = clip(21)
    _, ref = push_all(wan_stream(wan_codec, 2, fuse_cache_pass=True), frames, poses)
    gen = wan_stream(wan_codec, 2, fuse_cache_pass=True)
    outs = [gen.push(f, p) for f, p in zip(frames[:12], poses[:12])]          # chunk 1 ends at frame 12
    name, call = FAILURES[where]
    target = gen.network if name == "network" else getattr(wan_codec.vae, name)
    method = "commit_and_forward" if name == "network" else "forward"
    fail_on_call(target, method, call)
    coded = (gen.codec_stream.frames_encoded, gen.codec_stream.latents_decoded, list(gen.codec_stream.enc_cache))
    try:
        with pytest.raises(_Interrupted):
            gen.push(frames[12], poses[12])
    finally:
        delattr(target, method)
    stream = gen.codec_stream
    assert (stream.frames_encoded, stream.latents_decoded) == coded[:2] == (5, 2)
    assert all(a is b for a, b in zip(stream.enc_cache, coded[2]))
    assert gen.pending == 7 and gen.stats.chunks == 1
    outs += [gen.push(f, p) for f, p in zip(frames[12:], poses[12:])]
    assert torch.equal(torch.cat([o for o in outs if o is not None]), ref)


def test_cost_per_chunk_stops_growing(wan_codec):
    """Constant cost per chunk: after the sink + window fill, the KV cache holds the same tokens after every
    chunk, the VAE's feature caches the same number of values, and every chunk makes the same VAE calls."""
    gen = wan_stream(wan_codec, 1, sink=1, window=2)
    calls = {"encoder": 0, "decoder": 0}
    hooks = [getattr(wan_codec.vae, name).register_forward_hook(
        lambda *a, name=name: calls.__setitem__(name, calls[name] + 1)) for name in calls]
    frames, poses = clip(1 + 4 * 7)
    tokens, cached, per_chunk = [], [], []
    for f, p in zip(frames, poses):
        before = dict(calls)
        if gen.push(f, p) is not None:
            tokens.append(gen.cache.state()["tokens"])
            cached.append(sum(t.numel() for t in gen.codec_stream.enc_cache + gen.codec_stream.dec_cache
                              if torch.is_tensor(t)))
            per_chunk.append({k: calls[k] - before[k] for k in calls})
    for hook in hooks:
        hook.remove()
    assert len(tokens) == 8
    assert len(set(tokens[4:])) == 1 and tokens[4] > 0            # sink 1 + window 2 (+ the uncommitted chunk)
    assert len(set(cached[2:])) == 1                              # feature caches: fixed size from chunk 2 on
    assert per_chunk[1:] == [{"encoder": 1, "decoder": 1}] * 7


def test_chunk_sizes_frame_count_rule_stats_and_close(wan_codec):
    """c = 3 (the wan1.3b recipe): 9 then 12 frames per chunk; 81 frames fill 7 chunks, 80 only 6 (69 frames),
    100 fill 8 (93 frames).
    Stats give the buffering latency in frames and in ms at the stream's fps; close() counts what it drops."""
    gen3 = wan_stream(wan_codec, 3)
    assert [gen3.chunk_frames_at(3 * k) for k in range(3)] == [9, 12, 12]
    assert gen3.chunk_pose_frames() == [0, 4, 8]
    assert [gen3.whole_chunk_frames(t) for t in (81, 80, 100, 8, 9, 20, 21)] == [81, 69, 93, 0, 9, 9, 21]
    gen = wan_stream(wan_codec, 2, fps=8.0)
    frames, poses = clip(16)
    push_all(gen, frames, poses)                     # chunks of 5 and 8 frames, then 3 frames left over
    assert gen.pending == 3 and gen.next_chunk_frames() == 8
    s = gen.close().as_dict()
    assert s["frames"] == 13 and s["chunks"] == 2 and s["frames_dropped"] == 3 and s["pushes"] == 16
    assert s["buffer_latency_frames"] == 7 and s["buffer_latency_ms"] == pytest.approx(7 * 1000 / 8)
    assert len(s["chunk_ms"]) == 2 and s["chunk_compute_ms_max"] >= s["chunk_compute_ms_mean"] > 0
    assert s["frame_latency_ms_max"] == pytest.approx(s["buffer_latency_ms"] + s["chunk_compute_ms_max"])
    assert s["time_to_first_frame_ms"] > 0


def test_a_network_whose_channels_differ_from_the_vae_is_refused_naming_both(wan_codec):
    with pytest.raises(ValueError, match=r"WanCodec gives 16-channel latents but the network takes in_channels=12.*"
                                         r"in_channels=16"):
        StreamingGenerator(tiny_network(1, name="tiny-wan"), wan_codec, image_size=(SIZE, SIZE),
                           text=torch.zeros(1, TEXT_DIM))


def test_a_studio_session_streams_a_wan_bundle_chunk_by_chunk(tiny_wan_vae_dir, tmp_path):
    """The studio only uses push: stepped frame by frame on a Wan bundle (prompt from its text.npy), it publishes
    nothing until a chunk is complete, then every frame of the chunk (5, then 8 with 2 latent frames per chunk)."""
    from realcam.studio.session import Session
    from realcam.studio.sources import SyntheticFeed
    from tests.studio.test_session import Recorder, wait_for
    from tests.test_stream_cli import wan_bundle

    bundle = wan_bundle(tmp_path / "wan", tiny_wan_vae_dir, torch.randn(3, TEXT_DIM), size=SIZE)
    out = Recorder()
    session = Session(lambda steps: StreamingGenerator.from_checkpoint(bundle, steps=steps), out, tmp_path / "s",
                      steps=1)
    try:
        session.request(feed=SyntheticFeed((SIZE, SIZE), 30.0, seed=3))
        session.step(4)
        wait_for(lambda: session.gen is not None and session.gen.pending == 4)
        assert out.frames == []
        session.step(9)
        wait_for(lambda: len(out.frames) == 13)
        assert session.gen.stats.chunks == 2 and session.gen.pending == 0
    finally:
        session.close()
