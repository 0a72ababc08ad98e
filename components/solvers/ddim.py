"""DDIM (Song, Meng & Ermon 2021), eq. 12, for any Gaussian path:

    x_s = alpha_s x0_hat + sqrt(sigma_s^2 - c^2) eps_hat + c z,
    c = eta * sigma_s * sigma_{t|s} / sigma_t       (eq. 16 in alpha/sigma form).

eta = 0 is the deterministic DDIM (the probability-flow ODE's first-order exponential
integrator); eta = 1 is DDPM's ancestral sampler with the posterior variance.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import Field
from torch import Tensor

from components.denoisers.base import DenoiseFn
from components.noise.base import NoiseProcess
from components.random import RandomSource
from components.solvers.base import at, alpha_sigma, transition_var
from components.spec import Spec


class DdimSpec(Spec):
    kind: Literal["ddim"] = "ddim"
    eta: float = Field(0.0, ge=0, le=1, description="0 deterministic, 1 DDPM-like ancestral")

    def build(self) -> Ddim:
        return Ddim(self.eta)


class Ddim:
    def __init__(self, eta: float = 0.0):
        self.eta = eta

    def __call__(self, denoise: DenoiseFn, process: NoiseProcess, x: Tensor, ts: Tensor, rng: RandomSource) -> Tensor:
        for t, s in zip(ts[:-1], ts[1:]):
            pred = denoise(x, at(t, x))
            (a_t, s_t), (a_s, s_s) = alpha_sigma(process, t), alpha_sigma(process, s)
            c = self.eta * s_s * math.sqrt(transition_var(a_t, s_t, a_s, s_s)) / s_t if s_s > 0 else 0.0
            x = a_s * pred.x0 + math.sqrt(max(s_s**2 - c**2, 0.0)) * pred.eps
            if c > 0:
                x = x + c * rng.randn(*x.shape[1:]).to(x)
        return x
