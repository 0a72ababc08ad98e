"""Adaptive Runge-Kutta 4(5) (Dormand-Prince) on the probability-flow ODE, via scipy's
``solve_ivp(method="RK45")``: the reference solver of Song et al. 2021 (section 4.3, rtol = atol
= 1e-5) and Liu et al.'s rectified flow (their "RK45" rows).

It integrates dx/dt = alpha'(t) x0_hat + sigma'(t) eps_hat in the process's own time from the
grid's first time down to the process's t_min, in float64 on the CPU, over the whole batch at
once (one step size for all samples, as score_sde does), then takes the final denoising step to
x0_hat when t_min > 0. Only the grid's first time is used: the tolerances set the work.
``solve`` also returns the NFE (scipy's nfev, plus the final step).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import numpy as np
import torch
from pydantic import Field
from scipy.integrate import solve_ivp
from torch import Tensor

from components.denoisers.base import DenoiseFn
from components.noise.base import NoiseProcess
from components.random import RandomSource
from components.solvers.base import SolverTraits, at, derivative_at
from components.spec import Spec


class Rk45Spec(SolverTraits, Spec):
    has_step: ClassVar[bool] = False  # multistep / adaptive: no one-step form
    kind: Literal["rk45"] = "rk45"
    rtol: float = Field(1e-5, gt=0, description="relative tolerance (score_sde: 1e-5)")
    atol: float = Field(1e-5, gt=0, description="absolute tolerance (score_sde: 1e-5)")

    def build(self) -> Rk45:
        return Rk45(self)


@dataclass
class Rk45Info:
    nfe: int  # network evaluations, the final denoising step included
    steps: int  # accepted RK steps
    message: str


class Rk45:
    def __init__(self, spec: Rk45Spec | None = None):
        self.spec = spec or Rk45Spec()

    def __call__(self, denoise: DenoiseFn, process: NoiseProcess, x: Tensor, ts: Tensor, rng: RandomSource) -> Tensor:
        return self.solve(denoise, process, x, ts)[0]

    def solve(self, denoise: DenoiseFn, process: NoiseProcess, x: Tensor, ts: Tensor) -> tuple[Tensor, Rk45Info]:
        t0, t1 = float(ts[0]), float(process.t_min)
        if t1 >= t0:
            raise ValueError(f"rk45: the grid starts at t = {t0:g}, not above the process's t_min = {t1:g}")
        shape, dtype, device = x.shape, x.dtype, x.device

        def velocity(t: float, y: np.ndarray) -> np.ndarray:
            xt = torch.from_numpy(y).reshape(shape).to(device=device, dtype=dtype)
            tt = torch.tensor(t, dtype=torch.float64)
            v = denoise(xt, at(tt, xt)).velocity(*derivative_at(process, tt))
            return v.double().cpu().numpy().ravel()

        y0 = x.detach().double().cpu().numpy().ravel()
        sol = solve_ivp(velocity, (t0, t1), y0, method="RK45", rtol=self.spec.rtol, atol=self.spec.atol)
        if not sol.success:
            raise RuntimeError(f"rk45 did not reach t = {t1:g}: {sol.message}")
        out = torch.from_numpy(sol.y[:, -1]).reshape(shape).to(device=device, dtype=dtype)
        nfe = int(sol.nfev)
        if float(ts[-1]) == 0.0 and t1 > 0:
            out = denoise(out, at(torch.tensor(t1, dtype=torch.float64), out)).x0
            nfe += 1
        return out, Rk45Info(nfe=nfe, steps=len(sol.t) - 1, message=str(sol.message))
