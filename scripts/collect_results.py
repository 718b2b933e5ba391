"""Collect the ``test_report.json`` of runs (``RUNS/NAME/test/EVAL/``) into the markdown table of docs/results.md.

    python scripts/collect_results.py runs --runs 'teacher_*'                  # prints the table
    python scripts/collect_results.py runs --json docs/results/x.json         # also every report in one JSON
"""
import argparse
import json
from pathlib import Path


def fmt(x, digits=2):
    return "n/a" if x is None else f"{x:.{digits}f}"


def main(root: str, runs: str = "*", out: str | None = None) -> None:
    rows, reports = [], {}
    for report in sorted(Path(root).glob(f"{runs}/test/*/test_report.json")):
        run = f"{report.parts[-4]}_{report.parts[-2]}"       # e.g. student_dmd_T8
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
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root", nargs="?", default="runs")
    ap.add_argument("--runs", default="*", help="glob of run names, e.g. 'student_*'")
    ap.add_argument("--json", default=None, help="also write every report into this JSON")
    args = ap.parse_args()
    main(args.root, args.runs, args.json)
