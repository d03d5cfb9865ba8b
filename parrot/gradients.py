"""Gradient synchronisation over processes and the optimiser step, shared by both update stages."""

from __future__ import annotations

import torch
from accelerate.utils import reduce

__all__ = ["synchronise_gradients", "clip_and_step"]


def synchronise_gradients(parameters: list[torch.nn.Parameter], reduction: str, world: int, device: torch.device) -> None:
    """All-reduce (``reduction`` "sum" or "mean") the gradients of ``parameters`` over ``world``
    processes as one flat tensor on ``device``; an unused parameter contributes zeros."""
    if world == 1:
        return
    flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).flatten() for p in parameters])
    flat = reduce(flat.to(device), reduction=reduction)
    offset = 0
    for p in parameters:
        size = p.numel()
        p.grad = flat[offset : offset + size].view_as(p).to(p.dtype)
        offset += size


def clip_and_step(params: list[torch.nn.Parameter], optimizer: torch.optim.Optimizer, max_norm: float) -> float:
    """Clip the gradients' global norm to ``max_norm`` (0: no clipping), step; returns the norm before clipping."""
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    norm = torch.nn.utils.clip_grad_norm_(params, max_norm if max_norm > 0 else float("inf"))
    optimizer.step()
    return float(norm)
