"""Gradient synchronisation over processes and the optimiser step, shared by both update stages.

Data parallel (every process holds the whole model): :func:`synchronise_gradients` all-reduces the
gradients after the backward. Under FSDP (:mod:`parrot.sharding`) the T2I LoRA is sharded (DTensors), and
FSDP's reduce-scatter in the backward does it instead, set by :func:`sum_sharded_gradients` to the same sum.
"""

from __future__ import annotations

import torch
from accelerate.utils import reduce
from torch.distributed.fsdp import FSDPModule
from torch.distributed.tensor import DTensor

__all__ = ["synchronise_gradients", "sum_sharded_gradients", "clip_and_step"]


def synchronise_gradients(parameters: list[torch.nn.Parameter], reduction: str, world: int, device: torch.device) -> None:
    """All-reduce (``reduction`` "sum" or "mean") the gradients of ``parameters`` over ``world``
    processes as one flat tensor on ``device``; an unused parameter contributes zeros. Sharded
    parameters (DTensors) are left out: FSDP's reduce-scatter has summed theirs in the backward."""
    parameters = [p for p in parameters if not isinstance(p, DTensor)]
    if world == 1 or not parameters:
        return
    flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).flatten() for p in parameters])
    flat = reduce(flat.to(device), reduction=reduction)
    offset = 0
    for p in parameters:
        size = p.numel()
        p.grad = flat[offset : offset + size].view_as(p).to(p.dtype)
        offset += size


def sum_sharded_gradients(module: torch.nn.Module) -> None:
    """Make every FSDP2 unit of ``module`` reduce-scatter the SUM of the processes' gradients, as
    :func:`synchronise_gradients` "sum" does for the T2I update (FSDP's default is the mean): divide
    factor 1 with SUM collectives (NCCL and gloo both have them), and zeros for a parameter without a
    gradient on some process, so every process reduces the same tensors."""
    for unit in module.modules():
        if isinstance(unit, FSDPModule):
            unit.set_gradient_divide_factor(1.0)
            unit.set_force_sum_reduction_for_comms(True)
            unit.set_reduce_scatter_unused_params(True, recurse=False)


def clip_and_step(params: list[torch.nn.Parameter], optimizer: torch.optim.Optimizer, max_norm: float) -> float:
    """Clip the gradients' global norm to ``max_norm`` (0: no clipping), step; returns the norm before clipping.
    With sharded parameters the norm is over the full gradients (torch's DTensor reduction)."""
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    norm = torch.nn.utils.clip_grad_norm_(params, max_norm if max_norm > 0 else float("inf"))
    optimizer.step()
    return float(norm.full_tensor() if isinstance(norm, DTensor) else norm)
