"""DDPM ancestral sampling (Ho et al. 2020, Algorithm 2) on any Gaussian path and any grid.

x_s ~ q(x_s | x_t, x0 = x0_hat): the posterior mean (Ho eq. 7, in alpha/sigma form)
    mu = (alpha_{t|s} sigma_s^2 / sigma_t^2) x_t + (alpha_s sigma_{t|s}^2 / sigma_t^2) x0_hat,
with alpha_{t|s} = alpha_t / alpha_s, and variance sigma_s^2 sigma_{t|s}^2 / sigma_t^2 ("small",
the posterior's beta-tilde) or sigma_{t|s}^2 ("large", beta_t); no noise on the last step.
"""

from __future__ import annotations

import math
from typing import Literal

from torch import Tensor

from components.denoisers.base import DenoiseFn
from components.noise.base import NoiseProcess
from components.random import RandomSource
from components.solvers.base import at, alpha_sigma, transition_var
from components.spec import Spec


class DdpmSpec(Spec):
    kind: Literal["ddpm"] = "ddpm"
    variance: Literal["small", "large"] = "small"

    def build(self) -> Ddpm:
        return Ddpm(self.variance)


class Ddpm:
    def __init__(self, variance: str = "small"):
        self.variance = variance

    def __call__(self, denoise: DenoiseFn, process: NoiseProcess, x: Tensor, ts: Tensor, rng: RandomSource) -> Tensor:
        for t, s in zip(ts[:-1], ts[1:]):
            pred = denoise(x, at(t, x))
            (a_t, s_t), (a_s, s_s) = alpha_sigma(process, t), alpha_sigma(process, s)
            var_ts = transition_var(a_t, s_t, a_s, s_s)
            mean = (a_t / a_s) * s_s**2 / s_t**2 * x + a_s * var_ts / s_t**2 * pred.x0
            if s_s == 0:
                x = mean
                continue
            var = s_s**2 * var_ts / s_t**2 if self.variance == "small" else var_ts
            x = mean + math.sqrt(var) * rng.randn(*x.shape[1:]).to(x)
        return x
