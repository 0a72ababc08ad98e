"""The objective contract: (denoiser, process, batch[, teacher]) -> scalar loss.

``batch`` holds ``x0`` (data in the space diffusion runs in, i.e. after the autoencoder) and
``cond`` (the conditioner's output or None), plus whatever a dataset adds (reflow's ``noise``
pairs, say). Randomness comes only from ``rng``, a RandomSource whose rows are this worker's
share of the global batch, so training is reproducible and independent of the worker count.
Objectives that hold networks of their own (a frozen teacher, an EMA target) are nn.Modules and
update them in ``after_step``.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from components.denoisers.base import Denoiser
from components.random import RandomSource


class Objective(nn.Module):
    def loss(
        self, denoiser: Denoiser, batch: dict[str, Any], rng: RandomSource, step: int
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """(scalar loss to minimize, detached metrics to log)."""
        raise NotImplementedError

    def after_step(self, denoiser: Denoiser, step: int) -> None:
        """Called after each optimizer step (EMA targets, curricula)."""
