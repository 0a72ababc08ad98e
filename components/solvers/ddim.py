"""DDIM (Song, Meng & Ermon 2021), eq. 12, for any Gaussian path:

    x_s = alpha_s x0_hat + sqrt(sigma_s^2 - c^2) eps_hat + c z,
    c = eta * sigma_s * sigma_{t|s} / sigma_t       (eq. 16 in alpha/sigma form).

eta = 0 is the deterministic DDIM (the probability-flow ODE's first-order exponential
integrator); eta = 1 is DDPM's ancestral sampler with the posterior variance.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import Tensor

from components.denoisers.base import DenoiseFn
from components.noise.base import NoiseProcess
from components.random import RandomSource
from components.solvers.base import SolverTraits, StepSolver, fresh_noise, model_t, row_alpha_sigma
from components.util import bcast
from components.spec import Spec


class DdimSpec(SolverTraits, Spec):
    kind: Literal["ddim"] = "ddim"
    eta: float = Field(0.0, ge=0, le=1, description="0 deterministic, 1 DDPM-like ancestral")

    @property
    def deterministic(self) -> bool:  # type: ignore[override]
        return self.eta == 0

    def build(self) -> Ddim:
        return Ddim(self.eta)


class Ddim(StepSolver):
    def __init__(self, eta: float = 0.0):
        self.eta = eta

    def step(
        self, denoise: DenoiseFn, process: NoiseProcess, x: Tensor, t: Tensor, s: Tensor, rng: RandomSource
    ) -> Tensor:
        pred = denoise(x, model_t(t, x))
        (a_t, s_t), (a_s, s_s) = row_alpha_sigma(process, t), row_alpha_sigma(process, s)
        var_ts = (s_t**2 - (a_t / a_s) ** 2 * s_s**2).clamp_min(0)  # sigma_{t|s}^2
        c = torch.where(s_s > 0, self.eta * s_s * var_ts.sqrt() / s_t, torch.zeros_like(s_s))
        x = bcast(a_s, x) * pred.x0 + bcast((s_s**2 - c**2).clamp_min(0).sqrt(), x) * pred.eps
        if bool((c > 0).any()):
            x = x + bcast(c, x) * fresh_noise(x, rng)
        return x
