"""The EMA (timm's ModelEmaV3 with realcam's warm-up): its arithmetic, its checkpoint keys, old checkpoints."""
import torch
from torch import nn

from realcam.systems.common import EMA


def test_ema_tracks_before_start_then_decays():
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    ema = EMA(model, decay=0.9, start_step=2)
    assert not any(p.requires_grad for p in ema.parameters()) and not ema.module.training
    expect = [p.detach().clone() for p in model.parameters()]
    for step in range(5):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
        model.train()(torch.randn(8, 3))                      # moves the BatchNorm running stats (buffers)
        ema.update(model, step)
        decay = 0.0 if step < 2 else 0.9
        expect = [e * decay + p.detach() * (1 - decay) for e, p in zip(expect, model.parameters())]
        for e, p in zip(expect, ema.module.parameters()):
            torch.testing.assert_close(p, e, rtol=0, atol=1e-6)
    assert torch.equal(ema.module[1].num_batches_tracked, model[1].num_batches_tracked)
    ema.train()
    assert not ema.module.training, "the average always stays in eval mode"


def test_ema_checkpoint_keys_and_old_shadow_keys_load():
    model = nn.Linear(3, 4)
    ema = EMA(model)
    assert sorted(ema.state_dict()) == ["module.bias", "module.weight"]
    old = {"shadow.weight": torch.ones(4, 3), "shadow.bias": torch.zeros(4)}   # realcam's own EMA, before timm
    holder = nn.Module()
    holder.ema = ema
    holder.load_state_dict({f"ema.{k}": v for k, v in old.items()})
    assert torch.equal(ema.module.weight, torch.ones(4, 3))
