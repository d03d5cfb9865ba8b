"""FSDP2 sharding of the T2I denoiser over the processes, and the full tensors of its LoRA.

A run launched with an FSDP accelerate config (``configs/accelerate_fsdp.yaml``: ``distributed_type: FSDP``,
``fsdp_version: 2``) shards the denoiser θ (``policy.unet``: the UNet or the SD3 / FLUX transformer, after its
LoRA is added) with torch's ``fully_shard``: each wrap unit of the plugin's auto-wrap policy (the transformer
blocks, e.g. ``FluxTransformerBlock,FluxSingleTransformerBlock``) and then the root, so that each process holds
1/P of every parameter, frozen base weights and LoRA alike, and all-gathers one unit at a time for its forward.
Everything else (text encoders, VAE, rewards, expander) stays whole on every process. Gradients of the sharded
LoRA are reduce-scattered in the backward, summed over processes as the data-parallel loop sums them
(:func:`parrot.gradients.sum_sharded_gradients`); the optimiser steps each process's shard.

Why not ``accelerator.prepare(unet, optimizer)``: accelerate turns its FSDP plugin on only for GPU-type
processes (``AcceleratorState`` keeps ``MULTI_CPU`` for ``cpu=True`` whatever the config says), so a CPU run
would silently stay unsharded and the CPU tests could not see the path the GPUs take; and FSDP2's ``prepare``
also wraps the optimiser (``AcceleratedOptimizer``, whose ``state_dict`` and step the loop's checkpoints do not
expect). So the plugin accelerate read from the launch config (:func:`fsdp_plugin_of`) gives the settings —
wrap units through accelerate's own ``fsdp2_prepare_auto_wrap_policy``, ``reshard_after_forward``,
``cpu_offload``, ``mixed_precision_policy``, ``activation_checkpointing`` — and :func:`shard_denoiser` applies
``fully_shard`` as accelerate's ``fsdp2_prepare_model`` does (units bottom-up, then the root).

Every process must call a sharded module as often as the others (each call all-gathers, each backward
reduce-scatters): :func:`rows_for_collectives` gives a process without a trained image in a minibatch one
zero-weighted row to backpropagate, and the held-out evaluation runs on every process (:mod:`parrot.train`).
Saved LoRAs and optimiser states hold the full tensors (:func:`full_tensors`: an all-gather of the LoRA only,
never of the base weights), written by the main process; a resume copies each process's slice back
(:func:`local_slice`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin
from accelerate.utils.fsdp_utils import fsdp2_prepare_auto_wrap_policy, get_module_children_bottom_up
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard
from torch.distributed.tensor import DTensor, distribute_tensor

from parrot.gradients import sum_sharded_gradients
from parrot_base.cli import UsageError

__all__ = [
    "fsdp_plugin_of",
    "check_fsdp_settings",
    "shard_denoiser",
    "is_sharded",
    "reshard",
    "full_tensors",
    "full_optimizer_state",
    "local_slice",
    "rows_for_collectives",
]


def fsdp_plugin_of(accelerator: Accelerator) -> FullyShardedDataParallelPlugin | None:
    """accelerate's FSDP plugin of this launch (``accelerate launch --config_file <an FSDP config>``), or None
    (data parallel, or a single process: nothing to shard over).

    On GPUs accelerate holds it (``distributed_type`` FSDP); on CPU processes it reads the same environment
    (``ACCELERATE_USE_FSDP``, ``FSDP_*``) but keeps ``MULTI_CPU``, so the plugin is read here from it, with
    accelerate's own parser (``FullyShardedDataParallelPlugin()``)."""
    if accelerator.num_processes < 2:
        return None
    if accelerator.distributed_type == DistributedType.FSDP:
        return accelerator.state.fsdp_plugin
    if os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true":
        return FullyShardedDataParallelPlugin()
    return None


def check_fsdp_settings(plugin: FullyShardedDataParallelPlugin, compile_enabled: bool) -> None:
    """Refuse, in one line, what this loop's FSDP cannot do."""
    if plugin.fsdp_version != 2:
        raise UsageError(
            f"the accelerate config asks for FSDP version {plugin.fsdp_version}: set fsdp_version: 2 "
            "(the denoiser is sharded with FSDP2's fully_shard; see configs/accelerate_fsdp.yaml)"
        )
    if compile_enabled:
        raise UsageError("model.compile with FSDP is not supported: set model.compile.mode off, or launch data parallel")


def shard_denoiser(
    unet: torch.nn.Module, plugin: FullyShardedDataParallelPlugin, device: torch.device, trained: list[torch.nn.Parameter]
) -> list[torch.nn.Parameter]:
    """``fully_shard`` ``unet`` over all processes per ``plugin`` (wrap units bottom-up, then the root), with
    gradients summed over processes; returns the sharded parameters (DTensors) that replace ``trained``."""
    names = {id(p): n for n, p in unet.named_parameters()}
    trained_names = [names[id(p)] for p in trained]
    try:
        wraps = fsdp2_prepare_auto_wrap_policy(plugin, unet)
    except ValueError as err:  # a class named by fsdp_transformer_layer_cls_to_wrap that this model lacks
        raise UsageError(f"the accelerate config's FSDP wrap policy does not fit {type(unet).__name__}: {err}") from err
    if plugin.activation_checkpointing:
        unet.enable_gradient_checkpointing()  # the family's own per-block checkpointing, as model.gradient_checkpointing
    kwargs: dict[str, Any] = {
        "mesh": init_device_mesh(device.type, (torch.distributed.get_world_size(),)),
        "reshard_after_forward": plugin.reshard_after_forward,
        "offload_policy": plugin.cpu_offload,
        "mp_policy": plugin.mixed_precision_policy or MixedPrecisionPolicy(),
    }
    if wraps is not None:
        for module in get_module_children_bottom_up(unet)[:-1]:  # as accelerate's fsdp2_prepare_model: the root last
            if wraps(module) and not isinstance(module, FSDPModule):
                fully_shard(module, **kwargs)
    fully_shard(unet, **{k: v for k, v in kwargs.items() if k != "reshard_after_forward"})  # root: torch's default
    sum_sharded_gradients(unet)
    sharded = dict(unet.named_parameters())
    return [sharded[n] for n in trained_names]


def is_sharded(module: torch.nn.Module) -> bool:
    return isinstance(module, FSDPModule)


def reshard(module: torch.nn.Module) -> None:
    """Register every unit's sharded parameters again (a unit left gathered after a forward, e.g. the root)."""
    for unit in module.modules():
        if isinstance(unit, FSDPModule):
            unit.reshard()


@torch.no_grad()
def full_tensors(tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``tensors`` with each DTensor all-gathered to its full tensor (every process must call this, in the
    same order); other tensors as they are (detached)."""
    return {k: (v.full_tensor() if isinstance(v, DTensor) else v).detach() for k, v in tensors.items()}


def full_optimizer_state(optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """``optimizer.state_dict()`` with sharded states (Adam's moments of a sharded parameter) all-gathered."""
    state = optimizer.state_dict()
    return {**state, "state": {i: full_tensors(entries) for i, entries in state["state"].items()}}


def local_slice(like: torch.Tensor, full: torch.Tensor) -> torch.Tensor:
    """This process's slice of the full tensor ``full`` laid out as the DTensor ``like`` (no communication:
    every process holds ``full``); ``full`` itself when ``like`` is not sharded or shapes differ (a scalar state)."""
    if not isinstance(like, DTensor) or tuple(full.shape) != tuple(like.shape):
        return full
    return distribute_tensor(full.to(like.device, like.dtype), like.device_mesh, like.placements, src_data_rank=None)


def rows_for_collectives(trainable: torch.Tensor, rows_per_minibatch: int) -> torch.Tensor:
    """``trainable`` (N_local,) bool with the first row of each minibatch that has no trainable row added.

    Under FSDP a process whose minibatch has no trained image (all A_i = 0 and no KL) must still run the
    sharded model forward and backward, as the other processes do; the added row's weight is A_i = 0, so its
    loss and gradient are exactly 0."""
    out = trainable.clone()
    for start in range(0, trainable.numel(), rows_per_minibatch):
        if not trainable[start : start + rows_per_minibatch].any():
            out[start] = True
    return out
