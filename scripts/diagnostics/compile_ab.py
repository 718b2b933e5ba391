"""Would torch.compile pay on the streaming hot path? The no-grad passes' QKV projection + q/k norm + RoPE and the
block tail after attention (DiTBlock._finish) compiled with inductor (static shapes), against eager, the bundled
student pushed in alternation in one process (docs/benchmarks.md, "Where the time of a chunk goes").
Usage, from the repository root:  python scripts/diagnostics/compile_ab.py [STEPS ...]   (default 1 4)"""
import sys, time, statistics, torch, numpy as np
import torch.nn.functional as F
from realcam.streaming import StreamingGenerator
from realcam.modules import block as bb
from realcam.modules.rope import Rope3D
torch.set_num_threads(2)
try:
    torch._dynamo.config.recompile_limit = 64
except Exception:
    torch._dynamo.config.cache_size_limit = 64
FLAG = {"on": False}

def qkv_pure(h, w, b, nw, cos2, sin2, eps: float, heads: int):
    B, L, D = h.shape
    qkv = F.linear(h.to(w.dtype), w, b)
    qk = bb.rms_norm(qkv[..., :2 * D].unflatten(-1, (2, D)), nw, eps)
    qk_rot = Rope3D.rotate(qk.unflatten(-1, (heads, -1)), cos2[:, None, None], sin2[:, None, None])
    k = qk[:, :, 1].unflatten(-1, (heads, -1)).transpose(1, 2)
    v = qkv[..., 2 * D:].view(B, L, heads, -1).transpose(1, 2)
    return qk_rot[:, :, 0].transpose(1, 2), qk_rot[:, :, 1].transpose(1, 2), k, v

def finish_pure(x, out, m2, m3, m4, m5, ow, ob, w1, b1, w2, b2, eps: float):
    B, _, D = x.shape
    G = m2.shape[1]
    o = F.linear(out.transpose(1, 2).reshape(B, -1, D), ow, ob).view(B, G, -1, D)
    x = x + (o * m2).view(B, -1, D)
    h = (F.layer_norm(x, (D,), eps=eps).view(B, G, -1, D) * m4 + m3).view(B, -1, D)
    f = F.linear(F.gelu(F.linear(h, w1, b1), approximate="tanh"), w2, b2)
    return x + (f.view(B, G, -1, D) * m5).view(B, -1, D)

cq = torch.compile(qkv_pure, dynamic=False)
cf = torch.compile(finish_pure, dynamic=False)
orig_q, orig_f = bb.DiTBlock._qkv_fused, bb.DiTBlock._finish

def qkv_patch(self, h, rope, rope_q, rows):
    if not FLAG["on"] or rows is not None:
        return orig_q(self, h, rope, rope_q, rows)
    dt = torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else self.q.weight.dtype
    w, b, nw = self._fused_weights(dt)
    return cq(h, w, b, nw, rope[0], rope[1], self.eps, self.heads)

def finish_patch(self, x, out, mods):
    if not FLAG["on"] or torch.is_grad_enabled():
        return orig_f(self, x, out, mods)
    return cf(x, out, mods[2], mods[3], mods[4], mods[5], self.o.weight, self.o.bias, self.ffn[0].weight,
              self.ffn[0].bias, self.ffn[2].weight, self.ffn[2].bias, self.norm2.eps)

bb.DiTBlock._qkv_fused, bb.DiTBlock._finish = qkv_patch, finish_patch
rng = np.random.default_rng(0)
frames = rng.integers(0, 255, (8, 32, 32, 3), dtype=np.uint8)
pose = np.eye(4); pose[0, 3] = 0.2
B = "realcam/assets/tiny_student"
steps = [int(s) for s in sys.argv[1:]] or [1, 4]
gens = {(c, s): StreamingGenerator.from_checkpoint(B, steps=s, dtype="bf16") for c in (False, True) for s in steps}
outs = {k: [] for k in gens}
t0 = time.perf_counter()
for i in range(12):
    for k, g in gens.items():
        FLAG["on"] = k[0]
        t = time.perf_counter(); outs[k].append(g.push(frames[i % 8], pose))
        if k[0] and i < 3: print("warm push", k, i, f"{time.perf_counter() - t:.1f} s", flush=True)
print(f"warm-up {time.perf_counter() - t0:.0f} s")
for s in steps:
    a, b = torch.stack(outs[(False, s)]), torch.stack(outs[(True, s)])
    print("steps", s, "max |compiled-eager|", (a - b).abs().max().item(), "mean", (a - b).abs().mean().item())
ts = {k: [] for k in gens}
for i in range(150):
    for k, g in gens.items():
        FLAG["on"] = k[0]
        t = time.perf_counter(); g.push(frames[i % 8], pose); ts[k].append(time.perf_counter() - t)
for s in steps:
    a, b = statistics.median(ts[(False, s)]), statistics.median(ts[(True, s)])
    print(f"steps {s}: eager {a*1e3:.2f} ms ({1/a:.1f} FPS), compiled {b*1e3:.2f} ms ({1/b:.1f} FPS), speed-up {a/b:.3f}")
