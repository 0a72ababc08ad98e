"""Adaptive Runge-Kutta 4(5) (Dormand & Prince 1980) on the probability-flow ODE: the reference
solver of Song et al. 2021 (section 4.3, rtol = atol = 1e-5, via scipy's ``solve_ivp(method=
"RK45")``) and Liu et al.'s rectified flow (their "RK45" rows).

It integrates dx/dt = alpha'(t) x0_hat + sigma'(t) eps_hat in the process's own time from the
grid's first time down to the process's t_min, in float64, then takes the final denoising step to
x0_hat when t_min > 0. Only the grid's first time is used: the tolerances set the work.

Step control is scipy's RK45 (Hairer, Norsett & Wanner, "Solving ODEs I", II.4: the initial step
of eq. 4.14 and the error control of eqs. 4.11-4.13, safety 0.9, factors in [0.2, 10]), done
PER ROW: every sample has its own time, step size and error norm, and all rows are evaluated in
one batched network call per stage (rows at different times). A sample therefore follows the same
trajectory whatever it is batched with (score_sde used one step size for the whole batch, which
made a request's images depend on its batch-mates). Rows that have arrived wait, at step 0, for
the others. ``max_nfe`` bounds the network calls of one solve (a served request's budget).
``solve`` also returns the NFE (batched network calls, the final step included).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from pydantic import Field
from torch import Tensor

from components.denoisers.base import DenoiseFn
from components.noise.base import NoiseProcess
from components.random import RandomSource
from components.solvers.base import SolverTraits, at
from components.spec import Spec

# Dormand-Prince 5(4) tableau (scipy.integrate._ivp.rk.RK45)
C = (0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0)
A = (
    (),
    (1 / 5,),
    (3 / 40, 9 / 40),
    (44 / 45, -56 / 15, 32 / 9),
    (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
    (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
)
B = (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84)
E = (-71 / 57600, 0.0, 71 / 16695, -71 / 1920, 17253 / 339200, -22 / 525, 1 / 40)  # 5th - 4th order
SAFETY, MIN_FACTOR, MAX_FACTOR, EXPONENT = 0.9, 0.2, 10.0, -1 / 5  # error estimator of order 4


class Rk45Spec(SolverTraits, Spec):
    has_step: ClassVar[bool] = False  # multistep / adaptive: no one-step form
    kind: Literal["rk45"] = "rk45"
    rtol: float = Field(1e-5, ge=1e-10, le=1.0, allow_inf_nan=False, description="relative tolerance (score_sde: 1e-5)")
    atol: float = Field(1e-5, ge=1e-10, le=1.0, allow_inf_nan=False, description="absolute tolerance (score_sde: 1e-5)")
    max_nfe: int = Field(10_000, ge=10, le=1_000_000, description="most network calls of one solve; more is an error")

    def build(self) -> Rk45:
        return Rk45(self)


@dataclass
class Rk45Info:
    nfe: int  # batched network evaluations, the final denoising step included
    steps: int  # accepted RK steps of the row that took the most
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
        rtol, atol, max_nfe = self.spec.rtol, self.spec.atol, self.spec.max_nfe
        shape, dtype, device = x.shape, x.dtype, x.device
        rows = shape[0]
        nfe = 0

        def f(t: Tensor, y: Tensor) -> Tensor:  # t: (rows,), y: (rows, D), both float64
            nonlocal nfe
            if nfe >= max_nfe:
                raise RuntimeError(f"rk45 used its max_nfe = {max_nfe} network calls before reaching t = {t1:g} "
                                   f"(rtol = {rtol:g}, atol = {atol:g}); loosen the tolerances")
            nfe += 1
            xt = y.reshape(shape).to(dtype)
            da, ds = process.derivatives(t)
            return denoise(xt, at(t, xt)).velocity(da, ds).double().reshape(rows, -1)

        def norm(v: Tensor) -> Tensor:  # scipy's RMS norm, per row
            return v.pow(2).mean(1).sqrt()

        y = x.detach().double().reshape(rows, -1)
        t = torch.full((rows,), t0, dtype=torch.float64, device=device)
        f0 = f(t, y)
        # initial step (Hairer et al. II.4, eq. 4.14; scipy's select_initial_step), per row
        scale = atol + y.abs() * rtol
        d0, d1 = norm(y / scale), norm(f0 / scale)
        h0 = torch.where((d0 < 1e-5) | (d1 < 1e-5), torch.full_like(d0, 1e-6), 0.01 * d0 / d1.clamp_min(1e-300))
        h0 = h0.clamp(max=t0 - t1)
        f1 = f(t - h0, y - h0[:, None] * f0)
        d2 = norm((f1 - f0) / scale) / h0
        dmax = torch.maximum(d1, d2)
        h1 = torch.where(dmax <= 1e-15, (h0 * 1e-3).clamp_min(1e-6), (0.01 / dmax.clamp_min(1e-300)) ** (1 / 5))
        h_abs = torch.minimum(torch.minimum(100 * h0, h1), torch.full_like(h1, t0 - t1))

        fy = f0
        done = torch.zeros(rows, dtype=torch.bool, device=device)
        rejected = torch.zeros_like(done)
        accepted = torch.zeros(rows, dtype=torch.long, device=device)
        while not bool(done.all()):
            min_step = 10 * (t - torch.nextafter(t, torch.full_like(t, -torch.inf))).abs()
            if bool(((h_abs < min_step) & rejected & ~done).any()):
                raise RuntimeError(f"rk45 did not reach t = {t1:g}: the required step size is below the spacing of numbers")
            h_abs = torch.where(rejected, h_abs, torch.maximum(h_abs, min_step))
            t_new = torch.maximum(t - h_abs, torch.full_like(t, t1))
            h = torch.where(done, torch.zeros_like(t), t - t_new)  # > 0: time runs down
            h_abs = torch.where(done, h_abs, h)  # clipped at t_min, as scipy does before its update
            k = [fy]
            for s in range(1, 6):
                dy = sum(a * ki for a, ki in zip(A[s], k))
                k.append(f(t - C[s] * h, y - h[:, None] * dy))
            y_new = y - h[:, None] * sum(b * ki for b, ki in zip(B, k))
            f_new = f(t - h, y_new)
            k.append(f_new)
            scale = atol + torch.maximum(y.abs(), y_new.abs()) * rtol
            err = norm(h[:, None] * sum(e * ki for e, ki in zip(E, k)) / scale)
            ok = (err < 1) & ~done
            grow = torch.where(err == 0, torch.full_like(err, MAX_FACTOR),
                               (SAFETY * err.clamp_min(1e-300) ** EXPONENT).clamp(max=MAX_FACTOR))
            grow = torch.where(rejected, grow.clamp(max=1.0), grow)
            shrink = (SAFETY * err.clamp_min(1e-300) ** EXPONENT).clamp(min=MIN_FACTOR)
            bad = ~ok & ~done
            h_abs = torch.where(ok, h_abs * grow, torch.where(bad, h_abs * shrink, h_abs))
            y = torch.where(ok[:, None], y_new, y)
            fy = torch.where(ok[:, None], f_new, fy)
            t = torch.where(ok, t_new, t)
            accepted += ok.long()
            rejected = torch.where(ok, torch.zeros_like(rejected), rejected | bad)
            done = done | (ok & (t_new <= t1))

        out = y.reshape(shape).to(dtype)
        if float(ts[-1]) == 0.0 and t1 > 0:
            out = denoise(out, at(torch.tensor(t1, dtype=torch.float64), out)).x0
            nfe += 1
        return out, Rk45Info(nfe=nfe, steps=int(accepted.max()), message="The solver successfully reached the end of the integration interval.")
