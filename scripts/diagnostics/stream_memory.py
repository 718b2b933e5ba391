"""Does a long stream stay in constant memory? Pushes the bundled student 3000 times (1 step, bf16) and prints
the process RSS and the cache state along the way (docs/streaming.md, Guarantees). Linux (/proc).
Usage, from the repository root:  python scripts/diagnostics/stream_memory.py"""
import os
import time

import numpy as np
import torch

from realcam.streaming import StreamingGenerator


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


torch.set_num_threads(1)
g = StreamingGenerator.from_checkpoint("realcam/assets/tiny_student", steps=1, dtype="bf16")
rng = np.random.default_rng(0)
frames = rng.integers(0, 255, (8, 32, 32, 3), dtype=np.uint8)
pose = np.eye(4); pose[0, 3] = 0.2
t0 = time.time()
for i in range(1, 3001):
    g.push(frames[i % 8], pose)
    if i in (100, 500, 1000, 2000, 3000):
        print(i, f"rss {rss() / 2**20:.1f} MiB", f"{time.time() - t0:.0f} s", g.cache.state(), flush=True)
