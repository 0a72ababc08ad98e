"""DDPM ancestral sampling (Ho et al. 2020, Algorithm 2) on any Gaussian path and any grid.

x_s ~ q(x_s | x_t, x0 = x0_hat): the posterior mean (Ho eq. 7, in alpha/sigma form)
    mu = (alpha_{t|s} sigma_s^2 / sigma_t^2) x_t + (alpha_s sigma_{t|s}^2 / sigma_t^2) x0_hat,
with alpha_{t|s} = alpha_t / alpha_s, and variance sigma_s^2 sigma_{t|s}^2 / sigma_t^2 ("small",
the posterior's beta-tilde) or sigma_{t|s}^2 ("large", beta_t); no noise on the last step.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
from torch import Tensor

from components.denoisers.base import DenoiseFn
from components.noise.base import NoiseProcess
from components.random import RandomSource
from components.solvers.base import SolverTraits, StepSolver, fresh_noise, model_t, row_alpha_sigma
from components.util import bcast
from components.spec import Spec


class DdpmSpec(SolverTraits, Spec):
    kind: Literal["ddpm"] = "ddpm"
    deterministic: ClassVar[bool] = False
    variance: Literal["small", "large"] = "small"

    def build(self) -> Ddpm:
        return Ddpm(self.variance)


class Ddpm(StepSolver):
    def __init__(self, variance: str = "small"):
        self.variance = variance

    def step(
        self, denoise: DenoiseFn, process: NoiseProcess, x: Tensor, t: Tensor, s: Tensor, rng: RandomSource
    ) -> Tensor:
        pred = denoise(x, model_t(t, x))
        (a_t, s_t), (a_s, s_s) = row_alpha_sigma(process, t), row_alpha_sigma(process, s)
        var_ts = (s_t**2 - (a_t / a_s) ** 2 * s_s**2).clamp_min(0)
        mean = bcast((a_t / a_s) * s_s**2 / s_t**2, x) * x + bcast(a_s * var_ts / s_t**2, x) * pred.x0
        noisy = s_s > 0  # no noise on the step to the clean end
        if not bool(noisy.any()):
            return mean
        var = s_s**2 * var_ts / s_t**2 if self.variance == "small" else var_ts
        std = torch.where(noisy, var.sqrt(), torch.zeros_like(var))
        return mean + bcast(std, x) * fresh_noise(x, rng)
