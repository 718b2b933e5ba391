"""scripts/scale_estimate.py: its parameter count is the preset's, its matmul FLOPs are what torch counts for a
real forward, and it writes the table's numbers as JSON."""
import importlib.util
import json
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from realcam.modules.cond import Cond
from realcam.registry import BACKBONES

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "scale_estimate.py"
spec = importlib.util.spec_from_file_location("scale_estimate", SCRIPT)
scale_estimate = importlib.util.module_from_spec(spec)
spec.loader.exec_module(scale_estimate)


def test_params_and_block_flops_match_a_real_forward():
    model = BACKBONES.build("tiny-wan")
    p = scale_estimate.count_params("tiny-wan")
    assert p["total"] == sum(q.numel() for q in model.parameters())
    F, h, w, L = 2, 8, 8, 5
    x = torch.randn(1, F, 16, h, w)
    cond = Cond(torch.randn_like(x), torch.eye(4).repeat(1, F, 1, 1), torch.eye(3).repeat(1, F, 1, 1), (64, 64),
                text=torch.randn(1, L, 32))
    with FlopCounterMode(display=False) as counter:
        model(x, torch.rand(1, F), cond)
    counts = {k: sum(v.values()) for k, v in counter.get_flop_counts().items()}
    # block 0's weight matmuls (its forward, and the prompt's k v computed once per pass from outside it)
    measured = sum(counts.get(f"CrossFrameDiT.blocks.0{name}", 0) for name in ("", ".cross_attn.k", ".cross_attn.v"))
    tokens = 2 * F * (h // 2) * (w // 2)        # source + target, patch 2 x 2
    assert measured == scale_estimate.linear_flops(p, tokens, L)


def test_writes_the_table_as_json(tmp_path, capsys):
    out = tmp_path / "scale.json"
    assert scale_estimate.main(["--preset", "tiny-wan", "--frames", "3", "--grid", "8", "8", "--text", "4",
                                "--gpus", "2", "4", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert [r["gpus"] for r in result["per_gpu"]] == [2, 4]
    two, four = result["per_gpu"]
    assert four["teacher_step_s"] == two["teacher_step_s"] / 2, "twice the GPUs, half the time at a fixed batch"
    assert four["teacher_states_gb"] == two["teacher_states_gb"] / 2, "FSDP shards the states"
    assert "teacher GB/GPU" in capsys.readouterr().out
