"""Euler on the probability-flow ODE in EDM's form (Karras et al. 2022, Algorithm 1 with
Algorithm 2's churn; k-diffusion's sample_euler; diffusers' EulerDiscreteScheduler).

In EDM's sigma s = sigma / alpha on the scaled path x~ = x / alpha, the PF-ODE is
dx~/ds = (x~ - D(x~; s)) / s = eps_hat (eq. 4 with sigma(t) = t, s(t) = 1, their recommended
choice), so one Euler step from s_i to s_{i+1} is

    x~_{i+1} = x~_i + (s_{i+1} - s_i) eps_hat = x0_hat + s_{i+1} eps_hat,

i.e. x_{i+1} = alpha_{i+1} x0_hat + sigma_{i+1} eps_hat in the process's own scaling: on any
process this equals deterministic DDIM (Song et al. 2021 showed DDIM is this Euler step). It is
first order; the written form stays finite where alpha = 0 (rectified flow's prior).
"""

from __future__ import annotations

from typing import Literal

from torch import Tensor

from components.denoisers.base import DenoiseFn
from components.noise.base import NoiseProcess
from components.random import RandomSource
from components.solvers.base import Churn, ChurnSpec, StepSolver, model_t, row_alpha_sigma
from components.util import bcast


class EulerSpec(ChurnSpec):
    kind: Literal["euler"] = "euler"

    def build(self) -> Euler:
        return Euler(self)


class Euler(StepSolver):
    """``step`` is the deterministic Euler step; the grid loop adds the churn before it."""

    def __init__(self, spec: EulerSpec | None = None):
        spec = spec or EulerSpec()
        self.before_step = Churn(spec.s_churn, spec.s_tmin, spec.s_tmax, spec.s_noise)  # type: ignore[method-assign]

    def step(
        self, denoise: DenoiseFn, process: NoiseProcess, x: Tensor, t: Tensor, s: Tensor, rng: RandomSource
    ) -> Tensor:
        pred = denoise(x, model_t(t, x))
        a_s, s_s = row_alpha_sigma(process, s)
        return bcast(a_s, x) * pred.x0 + bcast(s_s, x) * pred.eps
