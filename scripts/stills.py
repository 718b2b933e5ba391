"""Side-by-side stills of the teacher and the student on the same held-out clips (docs/results.md).

Reads the side-by-side test videos (source | generated | ground truth) that ``realcam test`` saves for both
models on the same shards, and writes one PNG whose rows are (clip, frame) and whose columns are
source | teacher | student | ground truth, upscaled without smoothing.

    python scripts/stills.py runs/teacher_tiny/test/T8 runs/student_dmd/test/T8 docs/images/teacher_student_T8.png
"""
from __future__ import annotations

import argparse
from pathlib import Path

import av
import numpy as np
from PIL import Image


def read_video(path: Path) -> np.ndarray:
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def panels(video: np.ndarray) -> list[np.ndarray]:
    """[T, H, 3W, 3] -> [source, generated, ground truth], each [T, H, W, 3]."""
    w = video.shape[2] // 3
    return [video[:, :, i * w:(i + 1) * w] for i in range(3)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("teacher_run", type=Path)
    ap.add_argument("student_run", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--frames", type=int, nargs="+", default=[0, 4, 7])
    ap.add_argument("--clips", type=int, default=2)
    ap.add_argument("--scale", type=int, default=4)
    args = ap.parse_args()
    find = lambda run: sorted(run.glob("videos/test_step*/test-*.mp4"))  # noqa: E731  (RUN/test/EVAL/videos/...)
    teacher, student = find(args.teacher_run), find(args.student_run)
    if len(teacher) < args.clips or len(student) < args.clips:
        raise SystemExit(f"need {args.clips} test videos in each run; found {len(teacher)} and {len(student)}")
    rows = []
    for t_path, s_path in zip(teacher[:args.clips], student[:args.clips]):
        src, gen_t, gt = panels(read_video(t_path))
        _, gen_s, gt_s = panels(read_video(s_path))
        if gt.shape != gt_s.shape:
            raise SystemExit(f"{t_path} and {s_path} are not the same clip (shapes {gt.shape} vs {gt_s.shape})")
        for f in args.frames:
            row = [src[f], gen_t[f], gen_s[f], gt[f]]
            gap = np.full((row[0].shape[0], 2, 3), 255, np.uint8)
            rows.append(np.concatenate([x for p in row for x in (p, gap)][:-1], axis=1))
    gap = np.full((2, rows[0].shape[1], 3), 255, np.uint8)
    grid = np.concatenate([x for r in rows for x in (r, gap)][:-1], axis=0)
    image = Image.fromarray(grid).resize((grid.shape[1] * args.scale, grid.shape[0] * args.scale), Image.NEAREST)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    image.save(args.out)
    print(f"wrote {args.out} ({image.width}x{image.height}): rows = clip x frame {args.frames}, "
          f"columns = source | teacher | student | ground truth")


if __name__ == "__main__":
    main()
