"""Where a tiny teacher's sample error is: pixels some depth's warp can reproduce (copyable) or not, against the
per-pixel oracle (docs/results.md, "Where the remaining error is"). Usage, from the repository root:
    python scripts/diagnostics/copyable_regions.py CKPT [SAMPLER_STEPS]   (tiny recipe architecture, data/tiny/val)"""
import sys, math, torch
from realcam.systems.teacher import TeacherModule
from realcam.data.datamodule import RealcamDataModule
from realcam.systems.common import prepare_batch
from realcam.modules.codecs import PixelCodec
torch.set_num_threads(2)
ck = sys.argv[1]; steps = int(sys.argv[2]) if len(sys.argv) > 2 else 20
from realcam.modules.backbone import CrossFrameDiT
from realcam.networks import load_network_weights
D=[2.0, 2.14, 2.3, 2.48, 2.69, 2.95, 3.26, 3.64, 4.13, 4.76, 5.62, 6.87, 8.82, 12.33, 20.45, 60.0]
net = CrossFrameDiT(in_channels=12, dim=128, depth=6, heads=4, ffn_dim=512, patch=[1,2,2], freq_dim=128, prediction='x0', reproject_depths=D, reproject_space_to_depth=2, reproject_blend=True)
load_network_weights(net, ck)
m = TeacherModule(net, codec=PixelCodec(2), shift=3.0, pose_reference="current_source")
m.eval()
dm = RealcamDataModule(train_shards="data/tiny/train", test_shards="data/tiny/val", batch_size=16, num_workers=0, image_size=[32,32], length_buckets=None)
dm.setup("test"); batch = next(iter(dm.test_dataloader()))
with torch.no_grad(), torch.autocast("cpu", torch.bfloat16):
    out = m.generate(batch, steps=steps).float()
tgt = batch["target"].float(); src = batch["source"].float()
x0, cond = prepare_batch(batch, m.codec, m.hparams.pose_reference)
rp = m.ema.module.reproject
sampled, inside = rp.features(cond.source, cond.target_c2w, cond.target_K, cond.source_K if cond.source_K is not None else cond.target_K, cond.image_size)
err = rp.depth_errors(x0, (sampled, inside))          # B F D H W (latent units = pixel units for the pixel codec)
best = err.min(2).values
copyable = best <= 0.02
e_gen = ((out - tgt)**2).mean(2); e_copy = ((src - tgt)**2).mean(2)
# oracle-best sample in [-1,1]
bi = err.argmin(2, keepdim=True)
orc = torch.gather(sampled, 2, bi[:, :, :, None].expand(-1, -1, -1, 3, -1, -1)).squeeze(2)
e_orc = ((orc - tgt)**2).mean(2)
ps = lambda e: 10*math.log10(4/e.mean().item())
print(f"steps {steps}: all: gen {ps(e_gen):.2f} copy {ps(e_copy):.2f}; copyable frac {copyable.float().mean():.3f}")
for name, msk in [("copyable", copyable), ("not", ~copyable)]:
    print(f" {name}: gen {ps(e_gen[msk]):.2f} copy {ps(e_copy[msk]):.2f} oracle {ps(e_orc[msk]):.2f}; share of gen SSE {(e_gen[msk].sum()/e_gen.sum()).item():.2f}")
hyb = torch.where(copyable, e_orc, e_gen)
print(f" oracle in copyable + gen elsewhere: {ps(hyb):.2f}")
