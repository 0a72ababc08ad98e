"""The denoiser: backbone + process + parameterization (DESIGN.md section 2).

Its one call returns a :class:`Prediction` holding x0_hat and eps_hat, which agree with x_t
through x_t = alpha x0_hat + sigma eps_hat; v_hat and the probability-flow ODE velocity follow
from them with the process's alpha, sigma and their derivatives. Solvers and objectives talk
to this and only this.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from components.noise.base import NoiseProcess
from components.util import bcast

Cond = dict[str, Tensor] | None


@dataclass
class Prediction:
    x: Tensor  # x_t
    alpha: Tensor  # broadcast to x
    sigma: Tensor  # broadcast to x
    x0: Tensor
    eps: Tensor

    @property
    def v(self) -> Tensor:
        """v = alpha eps - sigma x0 (Salimans & Ho 2022, section 4)."""
        return self.alpha * self.eps - self.sigma * self.x0

    def velocity(self, d_alpha: Tensor, d_sigma: Tensor) -> Tensor:
        """dx/dt = alpha'(t) x0_hat + sigma'(t) eps_hat: the probability-flow ODE of the path."""
        return bcast(d_alpha, self.x) * self.x0 + bcast(d_sigma, self.x) * self.eps

    def with_x0(self, x0: Tensor) -> Prediction:
        """The prediction with x0 replaced (e.g. clipped) and eps made consistent with x_t."""
        eps = (self.x - self.alpha * x0) / self.sigma.clamp_min(1e-12)
        return Prediction(self.x, self.alpha, self.sigma, x0, eps)

    def chunk(self, k: int) -> list[Prediction]:
        """Split along the batch into k predictions."""
        parts = (getattr(self, f.name).chunk(k) for f in fields(self))
        return [Prediction(*p) for p in zip(*parts)]

    @staticmethod
    def guided(cond: Prediction, null: Prediction, w: float) -> Prediction:
        """Classifier-free guidance: eps~ = (1 + w) eps(c) - w eps(null) (Ho & Salimans 2022,
        eq. 6). x0 and eps are affine in each other at the same x_t, so guiding both is one rule."""
        return Prediction(
            cond.x,
            cond.alpha,
            cond.sigma,
            (1 + w) * cond.x0 - w * null.x0,
            (1 + w) * cond.eps - w * null.eps,
        )


class Parameterization(Protocol):
    """What a backbone's output means. Each kind is one file in components/denoisers/."""

    def precondition(self, x: Tensor, t: Tensor, process: NoiseProcess) -> tuple[Tensor, Tensor]:
        """(backbone input, c_noise)."""

    def to_x0_eps(
        self, out: Tensor, x: Tensor, t: Tensor, process: NoiseProcess
    ) -> tuple[Tensor, Tensor]:
        """(x0_hat, eps_hat) from the backbone output at x_t."""


class Plain:
    """Parameterizations that feed x_t and the process's c_noise to the backbone unchanged."""

    def precondition(self, x: Tensor, t: Tensor, process: NoiseProcess) -> tuple[Tensor, Tensor]:
        return x, process.model_time(t)


class Denoiser(nn.Module):
    def __init__(self, backbone: nn.Module, process: NoiseProcess, parameterization: Parameterization):
        super().__init__()
        self.backbone = backbone
        self.process = process
        self.parameterization = parameterization

    def forward(self, x: Tensor, t: Tensor, cond: Cond = None) -> Prediction:
        t = t.to(device=x.device, dtype=torch.float32).expand(x.shape[0])
        x_in, c_noise = self.parameterization.precondition(x, t, self.process)
        out = self.backbone(x_in, c_noise, cond)
        x0, eps = self.parameterization.to_x0_eps(out.to(x.dtype), x, t, self.process)
        a, s = bcast(self.process.alpha(t), x), bcast(self.process.sigma(t), x)
        return Prediction(x, a, s, x0, eps)


#: What solvers call: x_t, t (B,) -> Prediction. Condition, guidance and clipping are bound in.
DenoiseFn = Callable[[Tensor, Tensor], Prediction]


def bind(
    denoiser: Callable[..., Prediction],
    cond: Cond = None,
    null_cond: Cond = None,
    guidance: float = 0.0,
    clip_x0: float | None = None,
) -> DenoiseFn:
    """Close a denoiser over its condition, classifier-free guidance and x0 clipping, so every
    solver applies them the same way. With guidance, cond and null run as one batched call."""
    if guidance and null_cond is None:
        raise ValueError("guidance needs a null condition: this model's conditioner has none")

    def call(x: Tensor, t: Tensor) -> Prediction:
        if guidance:
            both = denoiser(torch.cat([x, x]), torch.cat([t, t]), _cat_cond(cond, null_cond))
            pred = Prediction.guided(*both.chunk(2), guidance)
        else:
            pred = denoiser(x, t, cond)
        if clip_x0 is not None:
            pred = pred.with_x0(pred.x0.clamp(-clip_x0, clip_x0))
        return pred

    return call


def _cat_cond(a: Cond, b: Cond) -> Cond:
    if a is None or b is None:
        raise ValueError("guidance needs both a condition and a null condition")
    if a.keys() != b.keys():
        raise ValueError(f"condition keys {sorted(a)} differ from null condition keys {sorted(b)}")
    return {k: torch.cat([a[k], b[k]]) for k in a}


def count_calls(fn: DenoiseFn, on_call: Callable[[], Any] | None = None) -> tuple[DenoiseFn, list[int]]:
    """Wrap a DenoiseFn to count network evaluations (NFE); ``on_call`` e.g. ticks a progress bar."""
    counter = [0]

    def call(x: Tensor, t: Tensor) -> Prediction:
        counter[0] += 1
        if on_call is not None:
            on_call()
        return fn(x, t)

    return call, counter
