"""docs/metrics.md's camera-accuracy example runs as written and does what its comment says."""
import re
from pathlib import Path

DOC = Path(__file__).resolve().parents[2] / "docs" / "metrics.md"


def test_camera_accuracy_example_runs_and_scores_within_the_bound(capsys):
    block = next(b for b in re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S) if "evaluate_camera" in b)
    scope: dict = {}
    exec(block, scope)
    summary = scope["result"]["summary"]
    assert summary["runs"] == 2 and summary["rot_err_deg_mean"] < 1.0 and summary["lost_frames"] == 0
    assert capsys.readouterr().out.strip()
