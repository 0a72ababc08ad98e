"""DPM-Solver++(2M): the multistep second-order solver of the data-prediction PF-ODE (Lu et al.
2022b, "DPM-Solver++", Algorithm 2; k-diffusion's sample_dpmpp_2m; diffusers'
DPMSolverMultistepScheduler with algorithm_type="dpmsolver++", solver_order=2, midpoint).

With lambda = log(alpha / sigma) and h_i = lambda_{i+1} - lambda_i:

    D_i = x0_hat_i                                 (first step, and the step to the clean end)
    D_i = (1 + 1/(2 r_i)) x0_hat_i - 1/(2 r_i) x0_hat_{i-1},  r_i = h_{i-1} / h_i
    x_{i+1} = (sigma_{i+1} / sigma_i) x_i - alpha_{i+1} (exp(-h_i) - 1) D_i

The step to sigma = 0 has h = inf and lands on x0_hat (diffusers' final_sigmas_type="zero").
A step from alpha = 0 (rectified flow's prior, lambda = -inf) is first order and finite:
x_{i+1} = sigma_{i+1} x_i + alpha_{i+1} x0_hat. One network evaluation per step.
"""

from __future__ import annotations

import math
from typing import ClassVar, Literal

from torch import Tensor

from components.denoisers.base import DenoiseFn
from components.noise.base import NoiseProcess
from components.random import RandomSource
from components.solvers.base import SolverTraits, at, alpha_sigma
from components.spec import Spec


class Dpmpp2mSpec(SolverTraits, Spec):
    has_step: ClassVar[bool] = False  # multistep / adaptive: no one-step form
    kind: Literal["dpmpp_2m"] = "dpmpp_2m"

    def build(self) -> Dpmpp2m:
        return Dpmpp2m()


def _lam(a: float, s: float) -> float:
    if a == 0:
        return -math.inf
    return math.inf if s == 0 else math.log(a / s)


class Dpmpp2m:
    def __call__(self, denoise: DenoiseFn, process: NoiseProcess, x: Tensor, ts: Tensor, rng: RandomSource) -> Tensor:
        prev_x0, h_prev = None, math.nan
        for t, s in zip(ts[:-1], ts[1:]):
            (a_t, s_t), (a_s, s_s) = alpha_sigma(process, t), alpha_sigma(process, s)
            pred = denoise(x, at(t, x))
            if s_s == 0:
                x = pred.x0
                continue
            h = _lam(a_s, s_s) - _lam(a_t, s_t)
            d = pred.x0
            if prev_x0 is not None and math.isfinite(h_prev) and math.isfinite(h):
                r = h_prev / h
                d = (1 + 1 / (2 * r)) * pred.x0 - (1 / (2 * r)) * prev_x0
            x = (s_s / s_t) * x - a_s * math.expm1(-h) * d
            prev_x0, h_prev = pred.x0, h
        return x
