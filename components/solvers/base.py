"""The solver contract: a stateless function

    (denoise, process, x_T, time grid, noise) -> x_0

``denoise`` is a DenoiseFn with condition, guidance and clipping already bound in
(components.denoisers.bind), ``ts`` is the grid of decreasing times ending at 0, ``noise`` the
RandomSource of the samples (per-request seeds). Solvers keep no state between calls.
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import Tensor

from components.denoisers.base import DenoiseFn
from components.noise.base import NoiseProcess
from components.random import RandomSource


class Solver(Protocol):
    def __call__(
        self, denoise: DenoiseFn, process: NoiseProcess, x: Tensor, ts: Tensor, noise: RandomSource
    ) -> Tensor: ...


def coefficients(process: NoiseProcess, t: Tensor) -> tuple[float, float]:
    """(alpha(t), sigma(t)) of one scalar time, in float64."""
    t = t.reshape(1).double()
    return float(process.alpha(t)), float(process.sigma(t))


def at(t: Tensor, x: Tensor) -> Tensor:
    """A scalar grid time as the (B,) float32 vector a denoiser takes."""
    return t.to(device=x.device, dtype=torch.float32).expand(x.shape[0])


def transition_var(a_t: float, s_t: float, a_s: float, s_s: float) -> float:
    """sigma_{t|s}^2 = sigma_t^2 - (alpha_t/alpha_s)^2 sigma_s^2, the variance of x_t | x_s
    (Kingma et al. 2021, eq. 4); for VP it is 1 - alphabar_t / alphabar_s."""
    return max(s_t**2 - (a_t / a_s) ** 2 * s_s**2, 0.0)
