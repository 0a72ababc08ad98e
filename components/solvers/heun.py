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

from typing import ClassVar, Literal

import torch
from torch import Tensor

from components.denoisers.base import DenoiseFn
from components.noise.base import NoiseProcess
from components.random import RandomSource
from components.solvers.base import Churn, ChurnSpec, StepSolver, model_t, row_alpha_sigma
from components.util import bcast


class HeunSpec(ChurnSpec):
    kind: Literal["heun"] = "heun"
    evals_per_step: ClassVar[int] = 2  # a predictor and a corrector call (the last step: 1)

    def build(self) -> Heun:
        return Heun(self)


class Heun(StepSolver):
    """``step`` is the deterministic Heun step; the grid loop adds the churn before it."""

    def __init__(self, spec: HeunSpec | None = None):
        spec = spec or HeunSpec()
        self.before_step = Churn(spec.s_churn, spec.s_tmin, spec.s_tmax, spec.s_noise)  # type: ignore[method-assign]

    def step(
        self, denoise: DenoiseFn, process: NoiseProcess, x: Tensor, t: Tensor, s: Tensor, rng: RandomSource
    ) -> Tensor:
        (a_t, s_t), (a_s, s_s) = row_alpha_sigma(process, t), row_alpha_sigma(process, s)
        pred = denoise(x, model_t(t, x))
        x_next = bcast(a_s, x) * pred.x0 + bcast(s_s, x) * pred.eps  # Euler: x~ + (s_next - s) eps_hat
        sig_t = torch.where(a_t > 0, s_t / a_t.clamp_min(1e-300), torch.full_like(s_t, torch.inf))
        sig_s = s_s / a_s
        second = (s_s > 0) & torch.isfinite(sig_t)  # rows that take the trapezoid (lines 9-11)
        if not bool(second.any()):
            return x_next
        s2 = torch.where(second, s.to(t.dtype), t)  # other rows evaluate somewhere harmless
        d = 0.5 * (pred.eps + denoise(x_next, model_t(s2, x)).eps)
        a_safe = torch.where(second, a_t, torch.ones_like(a_t))
        dsig = torch.where(second, sig_s - sig_t, torch.zeros_like(sig_t))
        heun = bcast(a_s, x) * (x / bcast(a_safe, x) + bcast(dsig, x) * d)
        return torch.where(bcast(second, x).bool(), heun, x_next)
