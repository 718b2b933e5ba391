"""What the copy gate adds per denoising pass of the bundled tiny student: one streamed frame's pass timed with the
gate off and on, in alternation (the machine's drift hits both alike), plus the blend alone. Prints medians.

    python scripts/diagnostics/copy_gate_cost.py [--rounds 300]
"""
import argparse
import statistics
import time

import torch

from realcam.streaming import StreamingGenerator, bundled_model


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=300)
    p.add_argument("--steps", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(1)
    gen = StreamingGenerator.from_checkpoint(bundled_model("tiny_student"), steps=args.steps, dtype="bf16")
    reproject = gen.network.reproject
    tau = reproject.copy_gate
    frame, pose = torch.rand(3, 32, 32) * 2 - 1, torch.eye(4)
    pose[0, 3] = 0.3
    times: dict[float, list[float]] = {0.0: [], tau: []}
    gen.reset(fov_deg=60)
    for _ in range(10):                     # fill the cache
        gen.push(frame, pose)
    for i in range(args.rounds):
        for gate in (0.0, tau) if i % 2 else (tau, 0.0):
            reproject.copy_gate = gate
            t0 = time.perf_counter()
            gen.push(frame, pose)
            times[gate].append(time.perf_counter() - t0)
    off, on = (statistics.median(times[g]) * 1e3 for g in (0.0, tau))
    print(f"push, {args.steps} step(s), bf16: gate off {off:.2f} ms, gate {tau:g} {on:.2f} ms, ratio {on / off:.3f}")


if __name__ == "__main__":
    main()
