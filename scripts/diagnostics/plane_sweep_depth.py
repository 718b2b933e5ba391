"""Would a plane sweep over neighbouring source frames (known source poses) pick the right depth? On data/tiny/val
(docs/results.md, "The source video's own motion"). Usage: python scripts/diagnostics/plane_sweep_depth.py"""
import math, torch, torch.nn.functional as F
from realcam.data.datamodule import RealcamDataModule
from realcam.modules.reproject import reproject_grid
torch.set_num_threads(2)
dm = RealcamDataModule(train_shards="data/tiny/train", test_shards="data/tiny/val", batch_size=16, num_workers=0, image_size=[32,32], length_buckets=None)
dm.setup("test"); b = next(iter(dm.test_dataloader()))
src, tgt = b["source"].float(), b["target"].float()
sc, tc, sK, tK = b["source_c2w"].double(), b["target_c2w"].double(), b["source_K"].float(), b["target_K"].float()
B, T = src.shape[:2]
D = torch.tensor([2.0, 2.14, 2.3, 2.48, 2.69, 2.95, 3.26, 3.64, 4.13, 4.76, 5.62, 6.87, 8.82, 12.33, 20.45, 60.0])
Dn = len(D)
def warp(n, t):   # source frame n seen from target frame t at each depth -> [B, D, 3, H, W], inside
    rel = torch.linalg.inv(sc[:, n]) @ tc[:, t]
    grid, front = reproject_grid(rel[:, None].float(), tK[:, t:t+1], sK[:, n:n+1], (32, 32), (32, 32), D)
    s = F.grid_sample(src[:, n], grid[:, 0].reshape(B, Dn*32, 32, 2), mode="bilinear", padding_mode="zeros", align_corners=False).view(B, 3, Dn, 32, 32).transpose(1, 2)
    inside = front[:, 0] & (grid[:, 0].abs() <= 1).all(-1)
    return s, inside
ps = lambda e: 10*math.log10(4/e.mean().item())
res = {k: [] for k in ["copy", "oracle", "mvs", "mvs_cop", "orc_cop", "single_best_frame"]}
for t in range(T):
    s0, in0 = warp(t, t)
    err = ((s0 - tgt[:, t, None])**2).mean(2).masked_fill(~in0, float("inf"))     # B D H W
    best = err.min(1).values; cop = best <= 0.02
    nb = [n for n in (t-2, t-1, t+1, t+2) if 0 <= n < T]
    var = torch.zeros_like(err); cnt = torch.zeros_like(err)
    for n in nb:
        s1, in1 = warp(n, t)
        ok = (in0 & in1).float()
        var += ((s1 - s0)**2).mean(2) * ok; cnt += ok
    score = torch.where(cnt > 0, var / cnt.clamp(min=1), torch.full_like(var, 1e3)).masked_fill(~in0, 1e4)
    pick = score.argmin(1, keepdim=True)
    e_pick = torch.gather(err, 1, pick).squeeze(1)
    e_pick = torch.where(torch.isfinite(e_pick), e_pick, ((src[:, t]-tgt[:, t])**2).mean(1))
    res["mvs"].append(e_pick); res["oracle"].append(torch.where(torch.isfinite(best), best, ((src[:, t]-tgt[:, t])**2).mean(1)))
    res["copy"].append(((src[:, t]-tgt[:, t])**2).mean(1))
    res["mvs_cop"].append(e_pick[cop]); res["orc_cop"].append(best[cop])
for k in ["copy", "oracle", "mvs"]:
    print(k, f"{ps(torch.stack(res[k])):.2f}")
print("copyable region: oracle", f"{ps(torch.cat(res['orc_cop'])):.2f}", "mvs", f"{ps(torch.cat(res['mvs_cop'])):.2f}")
# how often does the source camera move (translation between consecutive frames)?
mv = (sc[:, 1:, :3, 3] - sc[:, :-1, :3, 3]).norm(dim=-1).mean(1)
print("source translation per frame (m):", [round(x, 3) for x in mv.tolist()])
