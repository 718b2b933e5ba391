"""Draw the LoopAug pictures in docs/: one figure per strategy plus a grid of a synthetic clip.

    python scripts/plot_loopaug.py [--out docs/images] [--seed 0]

Per strategy: (left) the path in (step, scene time) with the target camera as colour and revisit arcs
n -> m; (middle) a top-down view (world x, z; y points down, so this looks from above) of the source and
target camera centres over the scene's objects; (bottom) the target frames, revisits outlined in the colour
of the step they repeat.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from realcam.data.loopaug import LoopSequence  # noqa: E402
from realcam.data.synthetic import SyntheticSource  # noqa: E402
from realcam.registry import LOOPAUG_STRATEGIES  # noqa: E402

SETTINGS = {  # strategy -> (init args, caption)
    "none": (dict(length=12), "plain sequence: time runs forward, no revisits"),
    "pingpong": (dict(length=15), "time runs forward then back; target on its own camera path"),
    "orbit_return": (dict(length=15, laps=2, path="orbit", degrees=40.0),
                     "frozen time: target orbits the scene centre and returns (2 laps)"),
    "camera_cycle": (dict(length=15, dwell=2), "target hops across the rig cameras and back; time ping-pongs"),
}


def plot_strategy(name: str, seq: LoopSequence, source: SyntheticSource, out: Path) -> Path:
    L = seq.num_steps
    first = [seq.revisit.get(n, n) for n in range(L)]
    colours = plt.cm.tab20(np.linspace(0, 1, 20))
    fig = plt.figure(figsize=(12, 6.2))
    grid = fig.add_gridspec(2, 2, height_ratios=[3, 1.1], width_ratios=[1.25, 1])
    ax_t, ax_top = fig.add_subplot(grid[0, 0]), fig.add_subplot(grid[0, 1])

    # (step, time) path
    times = np.array(seq.metadata["times"])
    cams = np.array(seq.metadata["target_cameras"])
    ax_t.plot(range(L), times, "-", color="0.7", zorder=1)
    for cam in sorted(set(cams.tolist())):
        sel = cams == cam
        label = "novel target camera" if cam < 0 else f"target = rig camera {cam}"
        ax_t.scatter(np.arange(L)[sel], times[sel], s=60, zorder=2, label=label)
    for n, m in seq.revisit.items():
        ax_t.annotate("", xy=(m, times[m]), xytext=(n, times[n]), zorder=0,
                      arrowprops=dict(arrowstyle="->", color="tab:red", alpha=0.6, connectionstyle="arc3,rad=0.35"))
    ax_t.set_xlabel("step n")
    ax_t.set_ylabel("scene time (frame)")
    ax_t.set_title(f"{name}: {len(seq.revisit)} revisits (red arrows n -> m)")
    ax_t.legend(fontsize=8, loc="upper left")
    ax_t.set_ylim(times.min() - 1, times.max() + 1.5)

    # top-down camera plot
    scene = source.scene(seq.metadata["source_index"])
    state = scene.object_state(times[0] / source.fps)
    for (c, _), s in zip(state[0], scene.spheres):
        ax_top.add_patch(plt.Circle((c[0], c[2]), s.radius, color=s.colors[0], alpha=0.8))
    for (c, _), b in zip(state[1], scene.boxes):
        ax_top.add_patch(plt.Rectangle((c[0] - b.half[0], c[2] - b.half[2]), 2 * b.half[0], 2 * b.half[2],
                                       color=b.colors[0], alpha=0.8))
    for c2w, style, label in ((seq.source_c2w, "s-", "source camera"), (seq.target_c2w, "o-", "target camera")):
        pos, fwd = c2w[:, :3, 3].numpy(), c2w[:, :3, 2].numpy()
        line = ax_top.plot(pos[:, 0], pos[:, 2], style, ms=4, label=label)[0]
        ax_top.quiver(pos[:, 0], pos[:, 2], fwd[:, 0], fwd[:, 2], color=line.get_color(), scale=12, width=0.004,
                      alpha=0.6)
    tp = seq.target_c2w[:, :3, 3].numpy()
    for n, m in seq.revisit.items():
        ax_top.plot(tp[n, 0], tp[n, 2], "o", mfc="none", mec="tab:red", ms=11)
    ax_top.set_aspect("equal")
    ax_top.set_xlabel("world x (m)")
    ax_top.set_ylabel("world z (m)")
    ax_top.set_title("top view (red rings: revisited poses)")
    ax_top.legend(fontsize=8, loc="best")

    # target filmstrip
    ax_f = fig.add_subplot(grid[1, :])
    H, W = seq.image_size
    pad = 3
    strip = np.ones((H + 2 * pad, L * (W + 2 * pad), 3))
    for n in range(L):
        x0 = n * (W + 2 * pad)
        colour = colours[first[n] % 20, :3]
        if first[n] != n or any(v == n for v in seq.revisit.values()):
            strip[:, x0:x0 + W + 2 * pad] = colour               # frame the states that repeat
        strip[pad:pad + H, x0 + pad:x0 + pad + W] = seq.target_frames[n].numpy() / 255.0
    ax_f.imshow(strip)
    ax_f.set_xticks([n * (W + 2 * pad) + pad + W / 2 for n in range(L)], [str(n) for n in range(L)])
    ax_f.set_yticks([])
    ax_f.set_title("target frames per step (same border colour = same state = identical ground truth)", fontsize=9)
    fig.suptitle(SETTINGS[name][1])
    fig.tight_layout()
    path = out / f"loopaug_{name}.png"
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def plot_scene_grid(source: SyntheticSource, index: int, out: Path, columns: int = 6) -> Path:
    """Rows: the K cameras; columns: frames across the clip."""
    clip = source.clip(index)
    ts = np.linspace(0, clip.num_frames - 1, columns).round().astype(int)
    fig, axes = plt.subplots(clip.num_cameras, columns, figsize=(1.7 * columns, 1.75 * clip.num_cameras))
    for k in range(clip.num_cameras):
        for j, t in enumerate(ts):
            ax = axes[k, j]
            ax.imshow(clip.frames[k, t].numpy())
            ax.set_xticks([])
            ax.set_yticks([])
            if k == 0:
                ax.set_title(f"frame {t}", fontsize=8)
            if j == 0:
                ax.set_ylabel(f"cam {k}\n{clip.metadata['trajectories'][k]}", fontsize=8)
    fig.suptitle(f"synthetic source, {clip.scene_id}: K={clip.num_cameras} synchronized cameras", fontsize=9)
    fig.tight_layout()
    path = out / "synthetic_scene.png"
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "docs" / "images")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--index", type=int, default=0)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    source = SyntheticSource(num_cameras=4, num_frames=16, height=56, width=72, seed=args.seed, split="docs")
    for name, (kwargs, _) in SETTINGS.items():
        seq = LOOPAUG_STRATEGIES.build(name, **kwargs)(source, args.index, torch.Generator().manual_seed(args.seed))
        print(plot_strategy(name, seq, source, args.out))
    grid_source = SyntheticSource(num_cameras=4, num_frames=16, height=96, width=128, seed=args.seed, split="docs")
    print(plot_scene_grid(grid_source, args.index, args.out))


if __name__ == "__main__":
    main()
