"""Self-rollout with the KV cache against a block-causal forward over the whole sequence."""
import pytest
import torch

from realcam.modules.backbone import CrossFrameDiT
from realcam.modules.flow import FlowSchedule, x0_from_flow
from realcam.modules.protocol import CONTRACT_SIZE
from realcam.registry import BACKBONES
from realcam.rollout import causal_rollout
from tests.modules.test_backbone import TINY, make_inputs, randomize


def reference_predictions(model, cond, rollout, sigmas):
    """Chunk i, step j from one block-causal forward over [x0_0 .. x0_{i-1} (clean), x_{i,j} (noisy)]."""
    c = model.chunk_frames
    out = []
    for i, states in enumerate(rollout.states):
        row = []
        for j, state in enumerate(states):
            x = torch.cat([rollout.x0[:, : i * c], state], dim=1)
            sigma = torch.zeros(x.shape[:2])
            sigma[:, i * c:] = sigmas[j]
            flow = model(x, sigma, cond.frames(0, (i + 1) * c))
            row.append(x0_from_flow(x, flow, sigma)[:, i * c:])
        out.append(row)
    return out


@pytest.mark.parametrize("name", BACKBONES.list())
@pytest.mark.parametrize("chunk_frames,window,rope", [(1, None, "window"), (2, None, "window"), (1, 2, "absolute"),
                                                      (2, 2, "absolute")])
def test_rollout_states_equal_block_causal_forward(name, chunk_frames, window, rope):
    """Every denoising state's x0 prediction from the cached rollout equals the full block-causal forward
    (with eviction under the absolute RoPE policy the reference is the sink+window-masked forward), for every
    registered backbone."""
    _, _, cond = make_inputs(B=2, F=6)
    model = randomize(BACKBONES.build(name, **CONTRACT_SIZE, attention_mode="causal", chunk_frames=chunk_frames,
                                      sink_chunks=1, window_chunks=window, rope_policy=rope), seed=3)
    if model.text_dim is not None:          # Wan: the rollout with a prompt
        cond.text = torch.randn(2, 5, model.text_dim, generator=torch.Generator().manual_seed(4))
    sigmas = FlowSchedule(shift=3.0).student_sigmas()
    with torch.no_grad():
        roll = causal_rollout(model, cond, sigmas, torch.Generator().manual_seed(0), record=True)
        ref = reference_predictions(model, cond, roll, sigmas)
    assert len(roll.states) == 6 // chunk_frames and all(len(s) == len(sigmas) for s in roll.states)
    for i, row in enumerate(ref):
        for j, pred in enumerate(row):
            torch.testing.assert_close(roll.predictions[i][j], pred, atol=2e-5, rtol=1e-4)
    # the result of each chunk is its last prediction, and consecutive states are fresh re-noisings of it
    c = chunk_frames
    for i, preds in enumerate(roll.predictions):
        torch.testing.assert_close(roll.x0[:, i * c:(i + 1) * c], preds[-1])
        for j in range(1, len(sigmas)):
            eps = (roll.states[i][j] - (1 - sigmas[j]) * preds[j - 1]) / sigmas[j]
            assert eps.std() > 0.5     # a fresh draw, not the state carried along


def test_exit_step_carries_gradient_only_at_that_step():
    _, _, cond = make_inputs(B=1, F=3)
    model = randomize(CrossFrameDiT(**TINY, attention_mode="causal", prediction="x0"), seed=4)
    sigmas = FlowSchedule(shift=3.0).student_sigmas()
    roll = causal_rollout(model, cond, sigmas, torch.Generator().manual_seed(1), exit_step=1, record=True)
    assert roll.x0.requires_grad and all(len(s) == 2 for s in roll.states)
    roll.x0.square().mean().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    # the exit pass runs the source again with gradient, so every block's query weights get some
    assert model.blocks[0].q.weight.grad.abs().sum() > 0
    # same seed and exit step without grad gives the same values: gradient does not change the computation
    with torch.no_grad():
        again = causal_rollout(model, cond, sigmas, torch.Generator().manual_seed(1), exit_step=1)
    torch.testing.assert_close(again.x0, roll.x0.detach())


def test_bad_arguments_name_the_field():
    _, _, cond = make_inputs(B=1, F=3)
    model = CrossFrameDiT(**TINY, attention_mode="causal")
    with pytest.raises(ValueError, match="exit_step"):
        causal_rollout(model, cond, torch.tensor([1.0, 0.5]), exit_step=2)
    with pytest.raises(ValueError, match="sigmas"):
        causal_rollout(model, cond, torch.tensor([1.0, 0.0]))
    with pytest.raises(ValueError, match="chunk_frames"):
        causal_rollout(CrossFrameDiT(**TINY, attention_mode="causal", chunk_frames=2), cond, torch.tensor([1.0]))
