"""The shard loader of two realcam trees on the same shards, timed in alternation (old, new, old, new, ...).

    python scripts/compare_loaders.py OLD_TREE NEW_TREE --out docs/benchmarks/loader_compare.json

Shards are made once (by NEW_TREE, npy and mp4 frames, the ``realcam data bench`` tiny preset), then each round
times ``RealcamDataModule.train_dataloader()`` of each tree in a fresh process: the steady second epoch with
persistent workers, as ``realcam data bench`` does. Prints samples/s per tree (median over rounds) and the
ratio new / old, and writes them as JSON.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

TIME_ONE = r"""
import json, sys, time, warnings
from realcam.data.datamodule import RealcamDataModule
shards, nw, batch, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
dm = RealcamDataModule(train_shards=shards, batch_size=batch, num_workers=nw, train_batches_per_epoch=n // batch,
                       shuffle_buffer=0, persistent_workers=True, loader_timeout=120.0 if nw else 0.0,
                       log_corrupt=False)
loader = dm.train_dataloader()
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    for epoch in range(2):
        t0, count = time.perf_counter(), 0
        for b in loader:
            count += b["source"].shape[0]
        seconds = time.perf_counter() - t0
print(json.dumps({"samples_per_s": count / seconds}))
"""


def time_tree(tree: str, shards: str, workers: int, batch: int, samples: int) -> float:
    env = dict(os.environ, PYTHONPATH=tree)
    out = subprocess.run([sys.executable, "-c", TIME_ONE, shards, str(workers), str(batch), str(samples)], env=env,
                         check=True, capture_output=True, text=True, cwd=tree).stdout
    return json.loads(out.strip().splitlines()[-1])["samples_per_s"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("old")
    p.add_argument("new")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--workers", default="0,2")
    p.add_argument("--formats", default="npy,mp4")
    p.add_argument("--samples", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--out")
    args = p.parse_args()
    sys.path.insert(0, args.new)
    from realcam.atomic import write_atomic
    from realcam.data.make import make_shards

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for fmt in args.formats.split(","):
            make_shards(Path(tmp) / fmt, args.samples, lengths=[16], samples_per_shard=max(1, args.samples // 8),
                        frame_format=fmt, progress=False)
            for nw in (int(w) for w in args.workers.split(",")):
                runs: dict[str, list[float]] = {"old": [], "new": []}
                for _ in range(args.rounds):
                    for name in ("old", "new"):
                        runs[name].append(time_tree(getattr(args, name), str(Path(tmp) / fmt / "train-*.tar"),
                                                    nw, args.batch_size, args.samples))
                old, new = statistics.median(runs["old"]), statistics.median(runs["new"])
                rows.append(dict(frame_format=fmt, num_workers=nw, old_samples_per_s=old, new_samples_per_s=new,
                                 ratio=new / old, runs=runs))
                print(f"{fmt:4s} workers={nw}  old {old:7.1f}  new {new:7.1f} samples/s  new/old {new / old:.2f}  "
                      f"(old {[round(v) for v in runs['old']]}, new {[round(v) for v in runs['new']]})", flush=True)
                if args.out:   # after every row: a long run that is stopped keeps what it measured
                    write_atomic(args.out, json.dumps({"old": args.old, "new": args.new, "rows": rows}, indent=1)
                                 + "\n")


if __name__ == "__main__":
    main()
