"""DMD's gradient accumulation (``accumulate``): 2 micro-batches of 1 sample per iteration train exactly as one
batch of 2 (the generator and critic each step once per iteration on the mean gradient), through `realcam fit`."""
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from realcam.systems import SelfForcingDMDModule
from tests.systems.test_data_parallel import data_args, run
from tests.systems.test_student import REPO, net_args, teacher_weights  # noqa: F401  (a fixture)


def dmd(teacher: Path, *extra: str) -> list[str]:
    return ["--config", str(REPO / "configs" / "student" / "tiny_dmd.yaml"), *net_args("generator"),
            *net_args("real_score"), "--model.init_args.generator_init", str(teacher),
            "--model.init_args.real_score_init", str(teacher), "--model.init_args.critic_ratio", "2",
            "--model.init_args.ema_start", "1", "--model.init_args.loop_weight", "0", "--trainer.max_steps", "3",
            *extra]


@pytest.mark.slow
def test_two_micro_batches_equal_one_batch_of_two(tiny_shards, teacher_weights, tmp_path):
    # 3 iterations with critic_ratio 2: generator + critic, critic, generator + critic
    whole, whole_keys = run([*dmd(teacher_weights), *data_args(tiny_shards, 2)], tmp_path / "whole", 1)
    micro, micro_keys = run([*dmd(teacher_weights, "--model.init_args.accumulate", "2"),
                                *data_args(tiny_shards, 1)], tmp_path / "micro", 1)
    assert [sorted(a + b) for a, b in zip(micro_keys[::2], micro_keys[1::2])] == whole_keys, "the same samples"
    whole, micro = whole[0], micro[0]
    assert int(micro["iteration"]) == int(whole["iteration"]) == 3, "an iteration is 2 micro-batches"
    for key in whole:
        torch.testing.assert_close(micro[key], whole[key], rtol=1e-4, atol=1e-6, msg=key)
    # the gradients each step took (below grad_clip 10): the mean over the micro-batches, not their sum (which
    # Adam's normalization would mostly hide in the weights)
    norms = [torch.load(tmp_path / run_ / "weights" / "rank0.pt", weights_only=True)["clipped"]
             for run_ in ("whole", "micro")]
    assert len(norms[0]) == 5 and max(norms[0]) < 10
    assert norms[1] == pytest.approx(norms[0], rel=1e-4)
    head = load_file(str(teacher_weights))["head.weight"]
    for net in ("generator", "critic", "ema.module"):       # the comparison means something: they all trained
        assert not torch.equal(whole[f"{net}.head.weight"], head), f"{net} did not train"


def test_accumulate_must_be_positive():
    with pytest.raises(ValueError, match="accumulate=0 must be >= 1"):
        SelfForcingDMDModule(generator="tiny", generator_args={"attention_mode": "causal"}, accumulate=0)
