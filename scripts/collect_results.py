"""Collect ``test_report.json`` files under a folder into the markdown table of docs/results.md.

    python scripts/collect_results.py runs/eval                       # prints the table
    python scripts/collect_results.py runs/eval docs/results/x.json   # also writes every report into one JSON
"""
import json
import sys
from pathlib import Path


def fmt(x, digits=2):
    return "n/a" if x is None else f"{x:.{digits}f}"


def main(root: str, out: str | None = None) -> None:
    rows, reports = [], {}
    for report in sorted(Path(root).glob("*/lightning_logs/version_*/test_report.json")):
        run = report.parts[-4]
        reports[run] = json.loads(report.read_text())
        rows.append((run, reports[run]["metrics"]))
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(reports, indent=2, sort_keys=True))
    print("| run | frames | PSNR | source-copy PSNR | gain (dB) | SSIM | source-copy SSIM | loop PSNR | "
          "source-copy loop PSNR | flicker (gen / gt) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for run, m in rows:
        base = m["baseline/source_copy/psnr"]
        print(f"| {run} | {m['num_frames']} | {fmt(m['psnr'])} | {fmt(base)} | {fmt(m['psnr'] - base)} | "
              f"{fmt(m['ssim'], 3)} | {fmt(m['baseline/source_copy/ssim'], 3)} | {fmt(m['loop_psnr'])} | "
              f"{fmt(m.get('baseline/source_copy/loop_psnr'))} | {fmt(m['flicker'], 3)} / {fmt(m['flicker_gt'], 3)} |")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "runs/eval", sys.argv[2] if len(sys.argv) > 2 else None)
