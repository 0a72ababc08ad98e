"""Heun's second-order method on the probability-flow ODE: EDM's Algorithm 2 (Karras et al.
2022), stochastic churn included (S_churn, S_tmin, S_tmax, S_noise; S_churn = 0 is their
deterministic sampler). k-diffusion's sample_heun; diffusers' HeunDiscreteScheduler.

In EDM's sigma s = sigma / alpha on the scaled path x~ = x / alpha (d_i = dx~/ds = eps_hat):

    x~_{i+1} = x~^_i + (s_{i+1} - s^_i) d_i                          (Euler, line 8)
    if s_{i+1} != 0:  d'_i = eps_hat(x~_{i+1}; s_{i+1})
                      x~_{i+1} = x~^_i + (s_{i+1} - s^_i) (d_i + d'_i) / 2   (lines 9-11)

so N steps cost 2N - 1 network evaluations (18 steps -> 35 NFE). Where alpha = 0 (rectified
flow's prior, s = inf) the step is Euler's: a trapezoid over an infinite interval is undefined.
"""

from __future__ import annotations

import math
from typing import ClassVar, Literal

from pydantic import Field
from torch import Tensor

from components.denoisers.base import DenoiseFn
from components.noise.base import NoiseProcess
from components.random import RandomSource
from components.solvers.base import Churn, at, alpha_sigma, ve_sigma
from components.spec import Spec


class HeunSpec(Spec):
    kind: Literal["heun"] = "heun"
    evals_per_step: ClassVar[int] = 2  # a predictor and a corrector call (the last step: 1)
    s_churn: float = Field(0.0, ge=0, le=1000, description="EDM's S_churn; 0 = deterministic")
    s_tmin: float = Field(0.0, ge=0, le=1e6, description="churn only where sigma/alpha >= S_tmin")
    s_tmax: float | None = Field(None, gt=0, le=1e6, description="churn only where sigma/alpha <= S_tmax; None = no bound")
    s_noise: float = Field(1.0, gt=0, le=2.0, description="EDM's S_noise (1 to 1.007 in EDM Table 5)")

    def build(self) -> Heun:
        return Heun(self)


class Heun:
    def __init__(self, spec: HeunSpec | None = None):
        spec = spec or HeunSpec()
        self.churn = Churn(spec.s_churn, spec.s_tmin, spec.s_tmax, spec.s_noise)

    def __call__(self, denoise: DenoiseFn, process: NoiseProcess, x: Tensor, ts: Tensor, rng: RandomSource) -> Tensor:
        n = len(ts) - 1
        for t, s in zip(ts[:-1], ts[1:]):
            x, t = self.churn(x, t, process, rng, n)
            (a_t, s_t), (a_s, s_s) = alpha_sigma(process, t), alpha_sigma(process, s)
            pred = denoise(x, at(t, x))
            x_next = a_s * pred.x0 + s_s * pred.eps  # Euler: x~ + (s_next - s) eps_hat
            sig_t, sig_s = ve_sigma(a_t, s_t), ve_sigma(a_s, s_s)
            if s_s > 0 and math.isfinite(sig_t):
                d = 0.5 * (pred.eps + denoise(x_next, at(s, x)).eps)
                x_next = a_s * (x / a_t + (sig_s - sig_t) * d)
            x = x_next
        return x
