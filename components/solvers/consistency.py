"""Multistep consistency sampling (Song et al. 2023, "Consistency Models", Algorithm 1; LCM's
Algorithm 3; diffusers' CMStochasticIterativeScheduler):

    x <- f(x_T, T)
    for tau in tau_1 > ... > tau_{N-1}:
        z ~ N(0, I);  x_tau = x + sqrt(tau^2 - eps^2) z;  x <- f(x_tau, tau)

on any process, in EDM's sigma s = sigma / alpha of the scaled path: x_tau = alpha(tau) (x0 +
sqrt(s_tau^2 - s_min^2) z), s_min the process's at t_min (CM's eps). T is the grid's first
time; the taus are ``times`` (the process's own time, decreasing) or else the grid's interior
times, so ``steps`` network evaluations with the default grid. One network call per time.
"""

from __future__ import annotations

import math
from typing import ClassVar, Literal

import torch
from pydantic import Field, field_validator
from torch import Tensor

from components.denoisers.base import DenoiseFn
from components.noise.base import NoiseProcess
from components.random import RandomSource
from components.solvers.base import SolverTraits, alpha_sigma, at, fresh_noise
from components.spec import Spec


class ConsistencySamplerSpec(SolverTraits, Spec):
    kind: Literal["consistency"] = "consistency"
    times: list[float] | None = Field(None, description="tau_1 > ... > tau_{N-1} in process time; None: the grid's")
    has_step: ClassVar[bool] = False  # re-noises between evaluations: no ODE step
    deterministic: ClassVar[bool] = False
    few_step: ClassVar[bool] = True

    @field_validator("times")
    @classmethod
    def _decreasing(cls, v: list[float] | None) -> list[float] | None:
        if v is not None and any(b >= a for a, b in zip(v, v[1:])):
            raise ValueError(f"times must be strictly decreasing, got {v}")
        return v

    def build(self) -> ConsistencySampler:
        return ConsistencySampler(self)


class ConsistencySampler:
    def __init__(self, spec: ConsistencySamplerSpec | None = None):
        self.spec = spec or ConsistencySamplerSpec()

    def __call__(self, denoise: DenoiseFn, process: NoiseProcess, x: Tensor, ts: Tensor, rng: RandomSource) -> Tensor:
        taus = ts[1:-1] if self.spec.times is None else torch.tensor(self.spec.times, dtype=torch.float64)
        if len(taus) and float(taus[0]) >= float(ts[0]):
            raise ValueError(f"consistency.times must start below the grid's first time {float(ts[0]):g}")
        x0 = denoise(x, at(ts[0], x)).x0
        a_min, s_min = alpha_sigma(process, torch.tensor(process.t_min, dtype=torch.float32).double())
        s_min = s_min / a_min
        for tau in taus:
            a, sg = alpha_sigma(process, tau)
            std = math.sqrt(max((sg / a) ** 2 - s_min**2, 0.0))
            x_tau = a * (x0 + std * fresh_noise(x0, rng))
            x0 = denoise(x_tau, at(tau, x_tau)).x0
        return x0
