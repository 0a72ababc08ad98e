"""Exponential moving average of the weights (Polyak averaging), identical on every rank.

decay_t = min(decay, (1 + t) / (10 + t)) with warmup (the schedule of Song et al.'s and
diffusers' EMA), so early averages are not dominated by the random init. The decay depends only
on the step, so a resumed run continues the exact same average. Every rank updates its own
copy from the same (all-reduced) weights, so the average is identical on every rank; under FSDP
each rank averages its own shard.
"""

from __future__ import annotations

import torch
from collections.abc import Iterable

from torch import Tensor, nn

from jobs.parallel import place_like


class Ema:
    def __init__(self, module: nn.Module, decay: float, warmup: bool = True, keys: Iterable[str] | None = None):
        """``keys``: average only these entries of the state dict (a LoRA run's adapters); all by default."""
        self.decay, self.warmup = decay, warmup
        keep = None if keys is None else set(keys)
        self.shadow = {k: v.detach().clone() for k, v in module.state_dict().items() if keep is None or k in keep}

    def decay_at(self, step: int) -> float:
        return min(self.decay, (1 + step) / (10 + step)) if self.warmup else self.decay

    @torch.no_grad()
    def update(self, module: nn.Module, step: int) -> None:
        d = self.decay_at(step)
        for k, v in module.state_dict().items():
            s = self.shadow.get(k)
            if s is None:
                continue
            if s.is_floating_point():
                s.lerp_(v.detach(), 1 - d)
            else:
                s.copy_(v)

    def state_dict(self) -> dict[str, Tensor]:
        return self.shadow

    def load_state_dict(self, sd: dict[str, Tensor]) -> None:
        missing = set(self.shadow) ^ set(sd)
        if missing:
            raise KeyError(f"EMA state keys differ from the model's: {sorted(missing)[:5]}")
        for k, s in self.shadow.items():  # in the module's order: placing is a collective under FSDP
            s.copy_(place_like(sd[k], s))  # sharded like the weights under FSDP
