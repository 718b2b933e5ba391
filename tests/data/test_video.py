"""PyAV helpers: H.264 write/read round trip, frame ranges, resize on decode, side-by-side stacking."""
import numpy as np
import pytest
import torch

from realcam.data.video import (VideoWriter, count_video_frames, iter_video, probe_video, read_video, side_by_side,
                                write_video)


def _frames(T=6, H=32, W=48) -> torch.Tensor:
    """Smooth, moving gradients (H.264-friendly, and every frame differs)."""
    t, y, x = torch.meshgrid(torch.arange(T), torch.arange(H), torch.arange(W), indexing="ij")
    r = (x * 255 // (W - 1) + 20 * t) % 256
    g = y * 255 // (H - 1)
    b = ((x + y) * 3 + 40 * t) % 256
    return torch.stack([r, g, b], -1).to(torch.uint8)


def test_write_read_round_trip(tmp_path):
    frames = _frames()
    path = write_video(tmp_path / "sub" / "clip.mp4", frames, fps=12)
    assert path.is_file() and not list(path.parent.glob(".*partial"))   # no temporary left behind
    info = probe_video(path)
    assert (info.height, info.width, info.codec) == (32, 48, "h264")
    assert info.fps == pytest.approx(12.0)
    back = read_video(path)
    assert back.shape == frames.shape and back.dtype == torch.uint8
    err = (back.float() - frames.float()).abs().mean()
    assert err < 6.0, f"mean abs error {err:.2f} too large for crf 18"


def test_frame_range_stride_and_resize(tmp_path):
    path = write_video(tmp_path / "clip.mp4", _frames(T=10), fps=10)
    full = read_video(path)
    assert torch.equal(read_video(path, start=2, stop=9, stride=3), full[2:9:3])
    assert torch.equal(read_video(path, start=7), full[7:])
    small = read_video(path, stop=2, size=(16, 24))
    assert small.shape == (2, 16, 24, 3)
    assert (small.float().mean() - full[:2].float().mean()).abs() < 8
    with pytest.raises(ValueError, match="selects no frame"):
        read_video(path, start=20)
    with pytest.raises(ValueError, match="frame range"):
        read_video(path, start=3, stop=1)


def test_incremental_writer_and_lazy_reader(tmp_path):
    """VideoWriter fed a frame or a few at a time writes what write_video writes; iter_video yields what
    read_video stacks; count_video_frames reads the count without decoding."""
    frames = _frames(T=7)
    with VideoWriter(tmp_path / "inc.mp4", fps=12) as writer:
        writer.write(frames[0])                     # one [H, W, 3] frame, then batches
        writer.write(frames[1:4])
        writer.write(frames[4:].numpy())
        assert not (tmp_path / "inc.mp4").exists()      # in place only once closed
    assert writer.frames_written == 7 and not writer.tmp.exists()
    assert torch.equal(read_video(tmp_path / "inc.mp4"), read_video(write_video(tmp_path / "one.mp4", frames, 12)))
    lazy = list(iter_video(tmp_path / "inc.mp4", start=1, stop=6, stride=2))
    assert torch.equal(torch.stack([torch.from_numpy(f) for f in lazy]), read_video(tmp_path / "inc.mp4")[1:6:2])
    assert count_video_frames(tmp_path / "inc.mp4") == 7


def test_encoding_is_reproducible(tmp_path):
    """The same frames give the same bytes every time. With libx264's mb-tree on (reproducible=False), repeated
    encodes of this clip gave about 20 different files in 40 tries, one thread or many."""
    frames = _frames(T=40, H=32, W=48)
    files = set()
    for i in range(6):
        path = write_video(tmp_path / f"{i}.mp4", frames, fps=12)
        files.add(path.read_bytes())
        read_video(path)                                 # decoding between encodes once exposed the difference
    assert len(files) == 1
    def error(video):
        return (video.float() - frames.float()).abs().mean().item()
    loose = read_video(write_video(tmp_path / "loose.mp4", frames, fps=12, reproducible=False))
    assert loose.shape == frames.shape and error(loose) < error(read_video(path)) + 1


def test_interrupted_or_bad_writes_leave_no_file(tmp_path):
    path = tmp_path / "x.mp4"
    with pytest.raises(KeyboardInterrupt):
        with VideoWriter(path, fps=5) as writer:
            writer.write(_frames(T=2))
            raise KeyboardInterrupt
    assert not path.exists() and not list(tmp_path.glob(".*partial"))
    writer = VideoWriter(path, fps=5)
    writer.write(_frames(T=2, H=8, W=8))
    with pytest.raises(ValueError, match="8x8.*same size"):
        writer.write(_frames(T=1, H=16, W=8))
    writer.abort()
    assert not list(tmp_path.iterdir())
    empty = VideoWriter(path, fps=5)
    empty.write(_frames(T=2)[:0])                 # an empty batch writes nothing and starts nothing
    with pytest.raises(ValueError, match="no frame was written"):
        empty.close()
    assert not list(tmp_path.iterdir())
    with pytest.raises(ValueError, match="fps"):
        VideoWriter(path, fps=0)


def test_odd_size_and_input_errors(tmp_path):
    odd = _frames(T=3, H=15, W=21)
    back = read_video(write_video(tmp_path / "odd.mp4", odd.numpy(), fps=5))
    assert back.shape == odd.shape
    with pytest.raises(TypeError, match="uint8"):
        write_video(tmp_path / "bad.mp4", odd.float(), fps=5)
    with pytest.raises(ValueError, match=r"\[T, H, W, 3\]"):
        write_video(tmp_path / "bad.mp4", odd[..., :2], fps=5)
    with pytest.raises(FileNotFoundError):
        read_video(tmp_path / "missing.mp4")
    (tmp_path / "junk.mp4").write_bytes(b"not a video at all")
    with pytest.raises(ValueError, match="cannot be opened"):
        read_video(tmp_path / "junk.mp4")


def test_side_by_side():
    a, b = _frames(T=4, H=8, W=5), _frames(T=4, H=8, W=7)
    out = side_by_side([a, b[0].numpy()], gap=2, gap_value=0)   # a single frame repeats over T
    assert out.shape == (4, 8, 5 + 2 + 7, 3)
    assert torch.equal(out[:, :, :5], a) and torch.equal(out[3, :, 7:], b[0])
    assert (out[:, :, 5:7] == 0).all()
    assert side_by_side([a]).shape == a.shape
    with pytest.raises(ValueError, match="H=8"):
        side_by_side([a, _frames(T=4, H=6, W=5)])
    with pytest.raises(ValueError, match="empty"):
        side_by_side([])


@pytest.mark.parametrize("crf", [0, 10])
def test_video_bytes_round_trip_at_odd_sizes(crf):
    """encode_video_bytes / decode_video_bytes (the mp4 shard frames): 4:4:4 or RGB, so odd sizes work; crf 0
    gives the frames back bit for bit, crf 10 close to them."""
    from realcam.data.video import decode_video_bytes, encode_video_bytes

    frames = _frames(T=5, H=15, W=21)
    back = decode_video_bytes(encode_video_bytes(frames, crf=crf))
    assert back.shape == (5, 15, 21, 3) and back.dtype == np.uint8
    error = np.abs(back.astype(int) - frames.numpy()).mean()
    assert error == 0 if crf == 0 else 0 < error < 3
    with pytest.raises(ValueError, match="not a decodable video"):
        decode_video_bytes(b"not an mp4 at all")
    with pytest.raises(ValueError, match="crf=52"):
        encode_video_bytes(frames, crf=52)
