"""ODE pairs for the student's ODE initialization (DESIGN §1.2 (a) and §2 "ODE init").

The teacher's Euler sampler runs over a sigma grid that CONTAINS the student's warped timesteps exactly
(``schedule.teacher_sigmas(steps)`` merged with ``schedule.student_sigmas()``), so the recorded states lie on
the teacher's own trajectory at exactly the sigmas the student will be trained and run at. One
:class:`FlowSchedule` (one shift, one step list) is written into every sample; :func:`read_ode_pairs`
refuses data made with another schedule (mixing them is the known pitfall).

One tar member per field, WebDataset style (``KEY.FIELD.EXT``)::

    KEY.json                 metadata: format, format_version, schedule {shift, denoising_steps,
                             num_train_timesteps}, teacher {steps, guidance, grid_size, ...}, image_size, ...
    KEY.ode_states.npy       float32|float16 [S, F, C, h, w]  teacher state x at each student sigma
    KEY.ode_sigmas.npy       float32 [S]                      == schedule.student_sigmas()
    KEY.ode_x0.npy           float32|float16 [F, C, h, w]     the teacher's final sample (sigma = 0)
    KEY.source_latents.npy   float32 [F, C, h, w]             clean source latents (Cond.source)
    KEY.target_latents.npy   float32 [F, C, h, w]             ground-truth target latents (for evaluation)
    KEY.target_c2w.npy       float32 [F, 4, 4]                relative to the pose reference (Cond.target_c2w)
    KEY.target_k.npy         float32 [F, 3, 3]                (lower-case k: WebDataset lower-cases suffixes)
    KEY.source_k.npy         float32 [F, 3, 3]
    KEY.revisit.npy          int64   [T]                      LoopAug revisit map, m at n, -1 elsewhere
    KEY.text.npy             float32 [L, D]                   the prompt's text embeddings (Cond.text), for a
                                                              text-conditioned teacher (as in its batch)
"""
from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np
import torch
from torch import Tensor

from realcam.atomic import write_atomic
from realcam.data.encode import batch_text
from realcam.data.shards import (ShardError, ShardWriter, _load_npy, _npy_bytes, check_name,
                                 expand_urls, iter_shard, temp_shard_name)
from realcam.modules.codecs import LatentCodec
from realcam.modules.cond import Cond
from realcam.modules.flow import FlowSchedule, sample_noise
from realcam.modules.samplers import Denoiser, euler_sample
from realcam.systems.common import prepare_batch, step_generator

FORMAT = "realcam-ode-pairs"
FORMAT_VERSION = 1
INDEX_NAME = "ode_index.json"
STATE_DTYPES = {"float32": np.float32, "float16": np.float16}


# -- the schedule ---------------------------------------------------------------------------------------------
def schedule_dict(schedule: FlowSchedule) -> dict[str, Any]:
    return dict(shift=float(schedule.shift), denoising_steps=[int(t) for t in schedule.denoising_steps],
                num_train_timesteps=int(schedule.num_train_timesteps))


def check_schedule(meta: dict[str, Any], schedule: FlowSchedule, where: str = "ODE pairs") -> None:
    """Raise ValueError when data made under ``meta["schedule"]`` does not match the student's ``schedule``."""
    stored, wanted = meta.get("schedule"), schedule_dict(schedule)
    if not isinstance(stored, dict):
        raise ValueError(f"{where}: json has no 'schedule' entry; regenerate with `realcam data make-ode-pairs`")
    diffs = [f"{k}: data {stored.get(k)!r} vs student {v!r}" for k, v in wanted.items()
             if stored.get(k) is None or (float(stored[k]) != v if k == "shift" else stored[k] != v)]
    if diffs:
        raise ValueError(f"{where} were made with a different schedule than the student's ({'; '.join(diffs)}). "
                         f"ODE data, regression, DMD and inference must share one shift and one step list: set the "
                         f"student's shift/denoising_steps to the data's, or regenerate with `realcam data "
                         f"make-ode-pairs --shift {wanted['shift']} --denoising-steps "
                         f"{','.join(map(str, wanted['denoising_steps']))}`")


def ode_sigma_grid(schedule: FlowSchedule, steps: int) -> tuple[Tensor, Tensor]:
    """The teacher's Euler grid with the student's sigmas merged in -> (grid [N] descending, 1 ... 0, float32;
    index [S]: grid[index] == schedule.student_sigmas() exactly)."""
    student = schedule.student_sigmas()
    # Merge in float32, the precision the sampler uses: a float64 merge could keep two entries that round equal.
    grid = torch.unique(torch.cat([schedule.teacher_sigmas(steps), student])).flip(0)
    index = torch.stack([(grid == s).nonzero()[0, 0] for s in student])
    return grid, index


@torch.no_grad()
def teacher_trajectory(denoiser: Denoiser, noise: Tensor, cond: Cond, grid: Tensor, index: Tensor,
                       guidance: float = 1.0, uncond: Cond | None = None) -> tuple[Tensor, Tensor]:
    """Euler over ``grid`` from ``noise`` (the state at grid[0]), stopping at each grid[index[k]] to record x.

    Returns states [B, S, F, C, h, w] and the final sample x0 [B, F, C, h, w]. Segments chain through the same
    float32 state, so this equals one ``euler_sample`` over the whole grid.
    """
    x, start, states = noise.float(), 0, []
    grid = grid.to(noise.device)
    for i in index.tolist():
        if i > start:
            x = euler_sample(denoiser, x, cond, grid[start:i + 1], guidance=guidance, uncond=uncond)
            start = i
        states.append(x)
    x0 = euler_sample(denoiser, x, cond, grid[start:], guidance=guidance, uncond=uncond)
    return torch.stack(states, 1), x0


# -- writing --------------------------------------------------------------------------------------------------
def _slice_batch(batch: dict, n: int) -> dict:
    return {k: v[:n] if isinstance(v, (Tensor, list)) else v for k, v in batch.items()}


def write_ode_pairs(denoiser: Denoiser, codec: LatentCodec, batches: Iterable[dict], out: str | Path, *,
                    schedule: FlowSchedule, steps: int = 50, guidance: float = 1.0,
                    pose_reference: str = "first_source", seed: int = 0, num_samples: int | None = None,
                    dtype: str = "float32", prefix: str = "ode", samples_per_shard: int = 64,
                    overwrite: bool = False, extra_meta: dict[str, Any] | None = None,
                    progress: bool = False, text_dim: int | None = None) -> dict[str, Any]:
    """Run the teacher over data ``batches`` (docs/data.md batch dicts, frames or latents) and write ODE pairs
    into ``out/PREFIX-NNNNNN.tar`` plus ``out/ode_index.json``. Sample n's noise comes from (seed, n) alone, so
    the pairs do not depend on the batch size. ``text_dim``: the teacher's; its batches must then carry ``text``,
    which every pair stores. Returns the index summary."""
    if dtype not in STATE_DTYPES:
        raise ValueError(f"dtype={dtype!r}: expected one of {sorted(STATE_DTYPES)}")
    if num_samples is not None and num_samples < 1:
        raise ValueError(f"num_samples={num_samples}: expected >= 1 (or None for every sample)")
    out, prefix = Path(out), check_name(prefix, "shard prefix")
    out.mkdir(parents=True, exist_ok=True)
    existing = sorted(out.glob(f"{prefix}-*.tar"))
    if existing and not overwrite:
        raise FileExistsError(f"{out} already holds {len(existing)} {prefix} shards ({existing[0].name}, ...): "
                              f"pass --overwrite to replace them or choose another --out")
    for path in [*existing, *out.glob(temp_shard_name(prefix, 0).replace("000000", "*"))]:
        path.unlink()
    grid, index = ode_sigma_grid(schedule, steps)
    sigmas = schedule.student_sigmas()
    meta_common = dict(format=FORMAT, format_version=FORMAT_VERSION, schedule=schedule_dict(schedule),
                       teacher=dict(steps=steps, guidance=float(guidance), grid_size=len(grid), **(extra_meta or {})),
                       pose_reference=pose_reference, seed=seed, state_dtype=dtype)
    np_dtype, n = STATE_DTYPES[dtype], 0
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=num_samples, desc="make-ode-pairs", unit="sample")
    with ShardWriter(out, prefix, samples_per_shard) as writer:
        for batch in batches:
            if num_samples is not None:
                if n >= num_samples:
                    break
                batch = _slice_batch(batch, num_samples - n)
            target, cond = prepare_batch(batch, codec, pose_reference, text_dim)
            B = target.shape[0]
            noise = torch.stack([sample_noise(target.shape[1:], step_generator(seed, n + b, 0, "ode"), target)
                                 for b in range(B)]).float()
            uncond = cond.without_camera() if guidance != 1.0 else None
            states, x0 = teacher_trajectory(denoiser, noise, cond, grid, index, guidance, uncond)
            for b in range(B):
                meta = dict(meta_common, key=f"{prefix}-{n:08d}", source_key=_item(batch, "key", b),
                            scene_id=_item(batch, "scene_id", b), strategy=_item(batch, "strategy", b),
                            num_states=len(sigmas), frames=int(x0.shape[1]), latent_shape=list(x0.shape[2:]),
                            image_size=list(cond.image_size), length=int(batch["revisit"].shape[1]))
                arrays = {"ode_states.npy": states[b].cpu().numpy().astype(np_dtype),
                          "ode_sigmas.npy": sigmas.numpy(),
                          "ode_x0.npy": x0[b].cpu().numpy().astype(np_dtype),
                          "source_latents.npy": cond.source[b].float().cpu().numpy(),
                          "target_latents.npy": target[b].float().cpu().numpy(),
                          "target_c2w.npy": cond.target_c2w[b].float().cpu().numpy(),
                          "target_k.npy": cond.target_K[b].float().cpu().numpy(),
                          "source_k.npy": (cond.source_K if cond.source_K is not None else cond.target_K)[b]
                          .float().cpu().numpy()}
                if "revisit" in batch:
                    arrays["revisit.npy"] = batch["revisit"][b].cpu().numpy().astype(np.int64)
                if cond.text is not None:
                    arrays["text.npy"] = cond.text[b].float().cpu().numpy()
                members = [("json", json.dumps(meta, sort_keys=True, separators=(",", ":")).encode())]
                members += [(suffix, _npy_bytes(a)) for suffix, a in arrays.items()]
                writer.write_members(meta["key"], [(f"{meta['key']}.{suffix}", data) for suffix, data in members])
                n += 1
            if bar is not None:
                bar.update(B)
    if bar is not None:
        bar.close()
    if n == 0:
        raise ValueError("make-ode-pairs: the shards yielded no samples (check --shards and --length-buckets)")
    summary = dict(meta_common, num_samples=n, num_shards=len(writer.shards), grid=grid.tolist(),
                   student_sigmas=sigmas.tolist(), pattern=f"{prefix}-{{000000..{len(writer.shards) - 1:06d}}}.tar",
                   shards=writer.shards)
    write_atomic(out / INDEX_NAME, json.dumps(summary, indent=1, sort_keys=True) + "\n")
    return summary


def _item(batch: dict, field: str, b: int) -> Any:
    values = batch.get(field)
    return values[b] if isinstance(values, list) and b < len(values) else None


# -- reading --------------------------------------------------------------------------------------------------
def decode_ode_pair(entries: dict[str, bytes], key: str = "?") -> dict[str, Any]:
    """Members of one sample -> dict of tensors (see the module docstring); ValueError names the member."""
    if "json" not in entries:
        raise ValueError(f"sample {key!r} has no json member (has {sorted(entries)})")
    meta = json.loads(entries["json"])
    if meta.get("format") != FORMAT or meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"sample {key!r} is not an ODE pair of format {FORMAT} v{FORMAT_VERSION} (json has "
                         f"format={meta.get('format')!r} v{meta.get('format_version')}): LoopSequence shards go to "
                         f"RealcamDataModule, ODE pairs come from `realcam data make-ode-pairs`")
    S, F, latent = int(meta["num_states"]), int(meta["frames"]), tuple(meta["latent_shape"])
    state_dtype = STATE_DTYPES[meta["state_dtype"]]
    shapes = {"ode_states.npy": (state_dtype, (S, F, *latent)), "ode_sigmas.npy": (np.float32, (S,)),
              "ode_x0.npy": (state_dtype, (F, *latent)), "source_latents.npy": (np.float32, (F, *latent)),
              "target_latents.npy": (np.float32, (F, *latent)), "target_c2w.npy": (np.float32, (F, 4, 4)),
              "target_k.npy": (np.float32, (F, 3, 3)), "source_k.npy": (np.float32, (F, 3, 3))}
    missing = [s for s in shapes if s not in entries]
    if missing:
        raise ValueError(f"sample {key!r} is missing members {missing} (has {sorted(entries)})")
    names = {"ode_states.npy": "states", "ode_sigmas.npy": "sigmas", "ode_x0.npy": "x0",
             "source_latents.npy": "source", "target_latents.npy": "target", "target_c2w.npy": "target_c2w",
             "target_k.npy": "target_K", "source_k.npy": "source_K"}
    out: dict[str, Any] = {names[s]: torch.from_numpy(_load_npy(entries[s], s, dt, shape)).float()
                           for s, (dt, shape) in shapes.items()}
    if "revisit.npy" in entries:
        out["revisit"] = torch.from_numpy(_load_npy(entries["revisit.npy"], "revisit.npy", np.int64,
                                                    (int(meta["length"]),)))
    out["text"] = _load_text(entries["text.npy"], key) if "text.npy" in entries else None
    out.update(key=meta["key"], image_size=tuple(meta["image_size"]), meta=meta)
    return out


def _load_text(data: bytes, key: str) -> Tensor:
    text = np.load(io.BytesIO(data), allow_pickle=False)
    if text.ndim != 2 or text.dtype != np.float32:
        raise ValueError(f"sample {key!r}: text.npy has dtype {text.dtype} shape {text.shape}: expected float32 [L, D]")
    return torch.from_numpy(text)


def read_ode_pairs(urls: str | list[str], schedule: FlowSchedule | None = None) -> Iterator[dict[str, Any]]:
    """Samples (dicts of tensors, :func:`decode_ode_pair`) from shard paths, brace patterns, globs or a directory.

    With ``schedule`` every sample is checked against it (:func:`check_schedule`), stored sigmas included.
    """
    for url in expand_urls(urls, "ode_shards"):
        for key, entries in iter_shard(url):
            try:
                sample = decode_ode_pair(entries, key)
            except (ValueError, KeyError, TypeError) as err:
                raise ShardError(url, key, str(err)) from err
            if schedule is not None:
                check_schedule(sample["meta"], schedule, where=f"ODE pairs in {url}")
                if not torch.equal(sample["sigmas"], schedule.student_sigmas()):
                    raise ValueError(f"{url} sample {key!r}: ode_sigmas.npy {sample['sigmas'].tolist()} != "
                                     f"schedule.student_sigmas() {schedule.student_sigmas().tolist()}: regenerate "
                                     f"the pairs with this schedule")
            yield sample


def collate_ode_pairs(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Samples of one shape -> a batch: states [B, S, F, C, h, w], sigmas [S], x0 / target [B, F, C, h, w], cond."""
    stack = lambda k: torch.stack([s[k] for s in samples])  # noqa: E731
    sizes = {s["image_size"] for s in samples}
    if len(sizes) != 1:
        raise ValueError(f"collate_ode_pairs: samples have different image sizes {sorted(sizes)}")
    texts = [s.get("text") for s in samples]
    if any(t is None for t in texts) and any(t is not None for t in texts):
        raise ValueError("collate_ode_pairs: some samples hold text.npy and some do not: make all pairs with one "
                         "teacher (a text-conditioned one stores every pair's text)")
    cond = Cond(source=stack("source"), target_c2w=stack("target_c2w"), target_K=stack("target_K"),
                source_K=stack("source_K"), image_size=sizes.pop(),
                text=None if texts[0] is None else batch_text(texts))
    return dict(states=stack("states"), sigmas=samples[0]["sigmas"], x0=stack("x0"), target=stack("target"),
                cond=cond, key=[s["key"] for s in samples])
