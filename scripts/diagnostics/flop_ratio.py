"""The FLOP bound of "time per generated video, teacher against student": both counted on the meta device (no
weights, no compute, any size), with FlopCounterMode (matmuls and attention) as `realcam bench` counts them.

The teacher runs its bidirectional forward over the whole interleaved video, `--teacher-steps` times; the student
streams chunk by chunk (the fused cache pass, sink 1 + `--window` chunks), `--steps` denoising steps per chunk.
At equal FLOP/s the time ratio equals the printed FLOP ratio, so it bounds what any machine can measure.
Usage, from the repository root:
    python scripts/diagnostics/flop_ratio.py --preset tiny --steps 1                 # 32x32, T = video frames
    python scripts/diagnostics/flop_ratio.py --preset wan1.3b --steps 1 4            # 480x832, Wan's 4x VAE in time
"""
import argparse

import torch
from torch.utils.flop_counter import FlopCounterMode

from realcam.modules.backbone import PRESETS, CrossFrameDiT
from realcam.modules.cond import Cond
from realcam.modules.flow import FlowSchedule
from realcam.bundle import evenly_spaced_steps
from realcam.rollout import rollout_chunk

# latent shape per frame and how video frames map to latent frames
SHAPES = {"tiny": dict(channels=12, hw=(16, 16), image=(32, 32), video=lambda lat: lat, latent=lambda T: T),
          "wan1.3b": dict(channels=16, hw=(60, 104), image=(480, 832), video=lambda lat: 4 * (lat - 1) + 1,
                          latent=lambda T: (T - 1) // 4 + 1)}


def tflop(flops: int) -> str:
    v = flops / 1e12
    return f"{v:,.0f}" if v >= 100 else f"{v:.3g}"


def count(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=sorted(SHAPES), default="tiny")
    p.add_argument("--steps", type=int, nargs="+", default=[1])
    p.add_argument("--lengths", type=int, nargs="+", default=[16, 32, 64, 128], help="video frames")
    p.add_argument("--window", type=int, default=3, help="student window chunks (sink 1)")
    p.add_argument("--teacher-steps", type=int, default=50)
    args = p.parse_args()
    shape, meta = SHAPES[args.preset], torch.device("meta")
    with meta:
        teacher = CrossFrameDiT(**PRESETS[args.preset], attention_mode="bidirectional")
        student = CrossFrameDiT(**PRESETS[args.preset], attention_mode="causal", window_chunks=args.window)
    c = student.chunk_frames
    print(f"| preset | video frames | latent frames | steps | teacher x{args.teacher_steps} (TFLOP) | student "
          f"(TFLOP) | FLOP ratio |\n|---|---|---|---|---|---|---|")
    for T in args.lengths:
        lat = -(-shape["latent"](T) // c) * c                        # whole chunks
        x = torch.zeros(1, lat, shape["channels"], *shape["hw"], device=meta)
        K = torch.eye(3, device=meta).expand(1, lat, 3, 3)
        cond = Cond(x, torch.eye(4, device=meta).expand(1, lat, 4, 4), K, shape["image"], source_K=K)
        with torch.no_grad():
            teacher_flops = args.teacher_steps * count(lambda: teacher(x, torch.full((1, lat), 0.5, device=meta), cond))
            for steps in args.steps:
                sigmas = FlowSchedule(shift=5.0, denoising_steps=tuple(evenly_spaced_steps(steps))).student_sigmas(
                    device=meta)

                def stream():
                    cache, previous = student.new_cache(), None
                    for a in range(0, lat, c):
                        part = Cond(x[:, a:a + c], cond.target_c2w[:, a:a + c], K[:, a:a + c], shape["image"],
                                    source_K=K[:, a:a + c])
                        x0, _, _ = rollout_chunk(student, part, sigmas, cache, None, part.source, previous=previous,
                                                 defer_cache_pass=True)
                        previous = (x0, part)
                student_flops = count(stream)
                print(f"| {args.preset} | {shape['video'](lat)} | {lat} | {steps} | {tflop(teacher_flops)} | "
                      f"{tflop(student_flops)} | {teacher_flops / student_flops:.1f}x |", flush=True)


if __name__ == "__main__":
    main()
