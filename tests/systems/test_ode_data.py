"""ODE pairs: states at exactly the student's sigmas, on the teacher's trajectory, atomic shards, one schedule."""
from pathlib import Path

import pytest
import torch
import yaml

from realcam.data.datamodule import RealcamDataModule
from realcam.modules.backbone import CrossFrameDiT
from realcam.modules.codecs import PixelCodec
from realcam.modules.flow import FlowSchedule
from realcam.modules.samplers import euler_sample
from realcam.systems.ode_cli import build_teacher, main as make_ode_pairs
from realcam.systems.ode_data import (collate_ode_pairs, ode_sigma_grid, read_ode_pairs, teacher_trajectory,
                                      write_ode_pairs)
from realcam.systems.teacher import TeacherModule

REPO = Path(__file__).resolve().parents[2]
STEPS = 6
TINY = dict(in_channels=12, dim=16, depth=1, heads=2, ffn_dim=32, freq_dim=16, prediction="x0")


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # Tiny matmuls on a shared 2-core machine: extra threads only contend (20 s with them, 1 s without).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def teacher() -> TeacherModule:
    torch.manual_seed(0)
    module = TeacherModule(CrossFrameDiT(**TINY), codec=PixelCodec(factor=2), shift=3.0).eval()
    # Fresh weights are degenerate (zero-initialized modulation: x0 prediction independent of x and sigma, so
    # every Euler grid lands on the same x0). Random weights make the trajectory depend on the grid.
    for p in module.ema.module.parameters():
        p.data.normal_(0, 0.1)
    return module


def batches(shards: Path, batch_size: int = 2) -> list[dict]:
    dm = RealcamDataModule(test_shards=str(shards / "val-000000.tar"), batch_size=batch_size, num_workers=0,
                           length_buckets=[4], log_corrupt=False)
    return list(dm.test_dataloader())


def write(teacher, shards, out, schedule, **kw):
    return write_ode_pairs(teacher.ema.module, teacher.codec, batches(shards), out, schedule=schedule, steps=STEPS,
                           pose_reference=teacher.hparams.pose_reference, **kw)


def test_grid_contains_teacher_and_student_sigmas_exactly():
    schedule = FlowSchedule(shift=3.0, denoising_steps=(1000, 750, 500, 250))
    grid, index = ode_sigma_grid(schedule, 5)
    assert torch.equal(grid[index], schedule.student_sigmas())
    assert set(schedule.teacher_sigmas(5).tolist()) <= set(grid.tolist())
    assert grid[0] == 1 and grid[-1] == 0 and bool((grid[1:] < grid[:-1]).all()), "descending, no duplicates"


def test_states_lie_on_the_teacher_trajectory(teacher, tiny_shards, tmp_path):
    schedule = FlowSchedule(shift=3.0)
    summary = write(teacher, tiny_shards, tmp_path, schedule, samples_per_shard=3)
    samples = list(read_ode_pairs(tmp_path, schedule=schedule))
    assert summary["num_samples"] == len(samples) == 4 and summary["num_shards"] == 2
    grid, index = ode_sigma_grid(schedule, STEPS)
    batch = collate_ode_pairs(samples)
    S = len(schedule.denoising_steps)
    assert batch["states"].shape == (4, S, 4, 12, 8, 8) and batch["x0"].shape == (4, 4, 12, 8, 8)
    for sample in samples:
        assert torch.equal(sample["sigmas"], schedule.student_sigmas())
        assert sample["meta"]["schedule"] == {"shift": 3.0, "denoising_steps": [1000, 750, 500, 250],
                                              "num_train_timesteps": 1000}
    # Re-integrate from every stored state with the same Euler grid: each must land on the stored x0.
    for k in range(S):
        x0 = euler_sample(teacher.ema.module, batch["states"][:, k], batch["cond"], grid[index[k]:])
        torch.testing.assert_close(x0, batch["x0"], atol=1e-4, rtol=1e-4, msg=f"state {k}")
    # And the segmented run equals one sampler call over the whole grid from the same noise.
    states, x0 = teacher_trajectory(teacher.ema.module, batch["states"][:, 0], batch["cond"], grid, index)
    torch.testing.assert_close(x0, euler_sample(teacher.ema.module, batch["states"][:, 0], batch["cond"], grid))
    torch.testing.assert_close(states, batch["states"], atol=1e-5, rtol=1e-5)
    # The stored x0 is the teacher's sample, not the data: the state at sigma 1 is the noise.
    assert not torch.allclose(batch["x0"], batch["target"])


def test_schedule_mismatch_is_a_clear_error(teacher, tiny_shards, tmp_path):
    write(teacher, tiny_shards, tmp_path, FlowSchedule(shift=3.0), num_samples=1, dtype="float16")
    (sample,) = read_ode_pairs(tmp_path, schedule=FlowSchedule(shift=3.0))
    assert sample["states"].shape == (4, 4, 12, 8, 8) and sample["meta"]["state_dtype"] == "float16"
    with pytest.raises(ValueError, match=r"shift: data 3\.0 vs student 5\.0.*one shift and one step list"):
        next(read_ode_pairs(tmp_path, schedule=FlowSchedule(shift=5.0)))
    with pytest.raises(ValueError, match="denoising_steps"):
        next(read_ode_pairs(tmp_path, schedule=FlowSchedule(shift=3.0, denoising_steps=(1000, 500))))


def test_shards_are_written_atomically(teacher, tiny_shards, tmp_path):
    calls, per_batch = [], len(ode_sigma_grid(FlowSchedule(shift=3.0), STEPS)[0]) - 1

    def failing(x, sigma, cond):
        calls.append(1)
        if len(calls) > per_batch + 2:   # dies inside the second batch, before the shard is complete
            raise RuntimeError("killed")
        return teacher.ema.module(x, sigma, cond)

    with pytest.raises(RuntimeError, match="killed"):
        write_ode_pairs(failing, teacher.codec, batches(tiny_shards), tmp_path, schedule=FlowSchedule(shift=3.0),
                        steps=STEPS, samples_per_shard=8)
    assert list(tmp_path.iterdir()) == [], "no finished shard, no temporary file, no index after a failure"
    write(teacher, tiny_shards, tmp_path, FlowSchedule(shift=3.0), samples_per_shard=8)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ode-000000.tar", "ode_index.json"]
    with pytest.raises(FileExistsError, match="--overwrite"):
        write(teacher, tiny_shards, tmp_path, FlowSchedule(shift=3.0))


def test_cli_end_to_end(teacher, tiny_shards, tmp_path):
    config = yaml.safe_load((REPO / "configs" / "teacher" / "tiny.yaml").read_text())
    config["model"]["init_args"]["denoiser"]["init_args"].update(dim=16, depth=1, heads=2, ffn_dim=32, freq_dim=16)
    config["data"]["init_args"]["image_size"] = [16, 16]
    (tmp_path / "teacher.yaml").write_text(yaml.safe_dump(config))
    module = build_teacher(config["model"])
    torch.manual_seed(1)
    for p in module.ema.module.parameters():   # EMA weights differ from the raw ones: the CLI must use the EMA
        p.data.normal_(0, 0.1)
    torch.save({"state_dict": module.state_dict()}, tmp_path / "teacher.ckpt")
    out = tmp_path / "ode"
    rc = make_ode_pairs(["--teacher", str(tmp_path / "teacher.ckpt"), "--config", str(tmp_path / "teacher.yaml"),
                         "--shards", str(tiny_shards / "val-000000.tar"), "--out", str(out), "--steps", "3",
                         "--guidance", "2.0", "--batch-size", "2", "--num-samples", "3",
                         "--length-buckets", "4", "--quiet", "--precision", "fp32",   # fp32: exact re-integration
                         "--device", "cpu"])
    assert rc == 0
    schedule = FlowSchedule(shift=module.hparams.shift)
    samples = list(read_ode_pairs(out, schedule=schedule))
    assert len(samples) == 3 and samples[0]["meta"]["teacher"]["use_ema"] is True
    assert samples[0]["meta"]["teacher"]["precision"] == "fp32"
    batch = collate_ode_pairs(samples)
    grid, index = ode_sigma_grid(schedule, 3)
    cond = batch["cond"]
    x0 = euler_sample(module.ema.module, batch["states"][:, 1], cond, grid[index[1]:], guidance=2.0,
                      uncond=cond.without_camera())
    torch.testing.assert_close(x0, batch["x0"], atol=1e-4, rtol=1e-4)
    unguided = euler_sample(module.ema.module, batch["states"][:, 1], cond, grid[index[1]:])
    assert not torch.allclose(unguided, batch["x0"], atol=1e-3), "guidance 2 must change the trajectory"
    rc = make_ode_pairs(["--teacher", str(tmp_path / "teacher.ckpt"), "--config", str(tmp_path / "teacher.yaml"),
                         "--shards", str(tiny_shards / "val-000000.tar"), "--out", str(out), "--quiet"])
    assert rc == 2, "existing pairs are not overwritten without --overwrite"
