"""How the trainable backbone is spread over workers: replicated (DDP: every rank holds all
weights, gradients are all-reduced) or sharded (FSDP2 ``fully_shard``: each rank holds a slice
of every weight, gathered per block for compute). Checkpoints always hold full tensors, so a run
saved under one strategy resumes under the other, and on any number of workers."""

from __future__ import annotations

from contextlib import contextmanager, nullcontext
from typing import Any

import torch
from torch import Tensor, nn


def shard(module: nn.Module) -> nn.Module:
    """FSDP2: shard each block the backbone keeps in a ModuleList (UNet res/attention blocks, DiT
    blocks: modules whose forward is called, so their weights are gathered just in time), then
    the root (embeddings, in/out convolutions)."""
    from torch.distributed.fsdp import fully_shard

    def blocks(items: nn.ModuleList):
        for item in items:
            if isinstance(item, nn.ModuleList):
                yield from blocks(item)
            elif any(True for _ in item.parameters()):
                yield item

    for child in module.children():
        if isinstance(child, nn.ModuleList):
            for block in blocks(child):
                fully_shard(block)
    fully_shard(module)
    return module


def shard_target(objective: nn.Module, wrapped: nn.Module) -> None:
    """Under FSDP, shard an objective's target network theta^- (CD / CT) as the student's backbone
    is sharded, so its EMA update is local to each rank's shard and its checkpoint is gathered
    like the weights. Called after the objective's state is restored (full tensors load into an
    unsharded copy), right after the student is sharded."""
    net = getattr(getattr(objective, "target", None), "net", None)
    if net is not None and hasattr(wrapped, "set_requires_gradient_sync"):  # an FSDP2 module
        shard(net.backbone)


def no_sync(module: nn.Module, enabled: bool):
    """Skip the gradient all-reduce for this backward (all but the last micro-batch)."""
    if not enabled:
        return nullcontext()
    if hasattr(module, "no_sync"):  # DDP
        return module.no_sync()
    if hasattr(module, "set_requires_gradient_sync"):  # FSDP2
        return _fsdp_no_sync(module)
    return nullcontext()


@contextmanager
def _fsdp_no_sync(module):
    module.set_requires_gradient_sync(False)
    try:
        yield
    finally:
        module.set_requires_gradient_sync(True)


def _is_dtensor(v: Any) -> bool:
    return type(v).__name__ == "DTensor"


def full(v: Any) -> Any:
    """A DTensor's full tensor (collective); anything else as it is."""
    return v.full_tensor() if _is_dtensor(v) else v


def gather(sd: dict[str, Any]) -> dict[str, Any]:
    """Full tensors of a (possibly sharded) state dict. Collective under FSDP: every rank calls it,
    and in the same order (sorted keys: a dict's order may differ between processes)."""
    return {k: full(sd[k]) for k in sorted(sd)}


def gather_optimizer(sd: dict[str, Any]) -> dict[str, Any]:
    """An optimizer state dict with full tensors (collective under FSDP)."""
    return {"state": {pid: gather(sd["state"][pid]) for pid in sorted(sd["state"])}, "param_groups": sd["param_groups"]}


def place_like(full: Tensor, like: Tensor) -> Tensor:
    """A full tensor placed as ``like`` is: sharded the same way when ``like`` is a DTensor."""
    if _is_dtensor(like):
        from torch.distributed.tensor import distribute_tensor

        return distribute_tensor(full.to(like.device, like.dtype), like.device_mesh, like.placements)
    return full


def place_optimizer_state(optimizer: torch.optim.Optimizer) -> None:
    """After ``load_state_dict`` of a full optimizer state: shard each tensor like its parameter.
    In parameter order on every rank (placing is a collective; a loaded state dict's order is not
    to be trusted: safetensors does not keep it)."""
    for group in optimizer.param_groups:
        for p in group["params"]:
            st = optimizer.state.get(p, {})
            for k in sorted(st):
                v = st[k]
                if isinstance(v, Tensor) and _is_dtensor(p) and not _is_dtensor(v) and v.shape == p.shape:
                    st[k] = place_like(v, p)


def mean_across_ranks(value: float) -> float:
    """The mean of a scalar over all workers (for logging the global batch's loss)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return value
    device = "cuda" if dist.get_backend() == "nccl" else "cpu"
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.item() / dist.get_world_size()
