"""FSDP2 for realcam's systems: every DiT block sharded on its own (``torch.distributed.fsdp.fully_shard``), with
optional activation checkpointing per block, through Lightning's ``ModelParallelStrategy``.

:class:`FullyShardStrategy` is the strategy to name in a config; :class:`ShardsNetworks` is the LightningModule
side (Lightning calls ``configure_model`` once the process group exists). Why FSDP2 and not Lightning's
``FSDPStrategy`` (FSDP1): FSDP2 shards parameters as DTensors, so ``torch.nn.utils.clip_grad_norm_`` computes the
global norm, the EMA updates shard by shard, and it runs on CPU processes over gloo as on GPUs over NCCL (FSDP1
needs a CUDA device), so CI runs the very strategy of the wan1.3b configs (tests/systems/test_wan_configs.py).
"""
from __future__ import annotations

from datetime import timedelta

from lightning.pytorch.strategies import ModelParallelStrategy
import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from realcam.modules.block import DiTBlock
from realcam.modules.processors import CachedLayer, MaskedAttention, PastAttention

# Methods other than ``forward`` that the backbone calls on a sharded module: FSDP2 gathers the module's
# parameters only around ``forward`` unless told about them (``register_fsdp_forward_method``).
FORWARD_METHODS = {"network": ("write_cache", "commit_and_forward"), "block": ("modulations", "keys_values"),
                   "cross_attn": ("keys_values",)}


class FullyShardStrategy(ModelParallelStrategy):
    """Lightning's ``ModelParallelStrategy`` as pure data parallelism with sharding (FSDP2, ZeRO-3 style): one
    data-parallel mesh dimension over every process, tensor parallel size 1.

    Args:
        activation_checkpointing: recompute each DiT block's activations in the backward pass instead of keeping
            them, in every pass with gradients, cached or not (:func:`checkpoint_block`).
        reshard_after_forward: free each block's gathered parameters after its forward (ZeRO-3; False keeps
            them until the backward, ZeRO-2 style: faster, more memory).
        save_distributed_checkpoint: False (the default here) writes one file of whole tensors, which
            ``realcam export`` and ``load_from_checkpoint`` read; True writes a folder of shards per rank.
    """

    def __init__(self, activation_checkpointing: bool = True, reshard_after_forward: bool = True,
                 save_distributed_checkpoint: bool = False, process_group_backend: str | None = None,
                 timeout_minutes: float = 30.0):
        super().__init__(data_parallel_size="auto", tensor_parallel_size=1,
                         save_distributed_checkpoint=save_distributed_checkpoint,
                         process_group_backend=process_group_backend, timeout=timedelta(minutes=timeout_minutes))
        self.activation_checkpointing = activation_checkpointing
        self.reshard_after_forward = reshard_after_forward

    def setup_environment(self) -> None:
        self._data_parallel_size = self.num_nodes * self.num_processes     # every process: one data-parallel dim
        super().setup_environment()

    def shard(self, network: nn.Module) -> None:
        """Shard one backbone over the data-parallel mesh: each DiT block (and its text cross-attention) is a
        unit, the rest (embedders, head) the network's own unit. Idempotent: a sharded network is left alone."""
        from torch.distributed.fsdp import FSDPModule, fully_shard, register_fsdp_forward_method

        if isinstance(network, FSDPModule):
            return
        mesh = self.device_mesh["data_parallel"]

        def unit(module: nn.Module, methods: tuple[str, ...]) -> None:
            fully_shard(module, mesh=mesh, reshard_after_forward=self.reshard_after_forward)
            for name in methods:
                register_fsdp_forward_method(module, name)

        for block in (m for m in network.modules() if isinstance(m, DiTBlock)):
            if self.activation_checkpointing:
                checkpoint_block(block)
            if block.cross_attn is not None:
                unit(block.cross_attn, FORWARD_METHODS["cross_attn"])
            unit(block, FORWARD_METHODS["block"])
        unit(network, FORWARD_METHODS["network"])


class ShardsNetworks:
    """``configure_model`` for a system: under :class:`FullyShardStrategy`, shard every backbone it holds (each
    module with DiT blocks in a ``blocks`` list: the trained network, its EMA copy, DMD's real score and critic).
    Under any other strategy it does nothing."""

    def configure_model(self) -> None:
        strategy = self.trainer.strategy if self._trainer is not None else None
        if not isinstance(strategy, FullyShardStrategy):
            return
        for network in sharded_networks(self):
            strategy.shard(network)


def checkpoint_block(block: DiTBlock) -> None:
    """Make ``block`` recompute its activations in the backward pass (``torch.utils.checkpoint``, non-reentrant)
    in every pass with gradients: without a KV cache (the teacher, ODE init, the critic, DMD's scores) and
    against one (the self-rollout's exit pass of each chunk). A cached pass stages its K/V into the cache and
    reads the cache as it is then, which has moved on (and evicted) by the backward pass, so its layer is first
    pinned (:meth:`~realcam.modules.processors.CachedLayer.pin`): the recomputation runs the block as a pure
    function of its input and of the cache's K/V and positions held from forward time, and the staging happens in
    the forward pass only. The fused cache pass (inference, no gradients) and no-grad passes run as they are.
    The module is unchanged otherwise (same state-dict names)."""
    forward = block.forward

    def forward_checkpointed(x, mods, rope, attn, *args, **kwargs):
        if torch.is_grad_enabled() and isinstance(attn, CachedLayer):
            attn = attn.pin()
        if torch.is_grad_enabled() and isinstance(attn, (MaskedAttention, PastAttention)):
            return checkpoint(forward, x, mods, rope, attn, *args, use_reentrant=False, **kwargs)
        return forward(x, mods, rope, attn, *args, **kwargs)

    block.forward = forward_checkpointed


def sharded_networks(module: nn.Module) -> list[nn.Module]:
    """The backbones inside ``module``: modules whose ``blocks`` is a list of DiT blocks."""
    return [m for m in module.modules()
            if isinstance(getattr(m, "blocks", None), nn.ModuleList) and any(isinstance(b, DiTBlock) for b in m.blocks)]
