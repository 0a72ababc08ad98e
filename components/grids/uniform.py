"""Uniform time grid: ``steps`` times evenly spaced from t_max down to t_min, then 0.

On a discrete chain the times are its steps n/T with 0-based timesteps n - 1 =
round(linspace(0, T - 1, steps)), diffusers' "linspace" spacing (so steps = T is DDPM's full
chain t = T/T, ..., 1/T), except at steps = 1, where linspace's single point is its START
(timestep 0, t = 1/T, the least noisy level: a 1-NFE sample from pure noise would be denoised as
if almost clean): one step starts at t = T/T, like every grid. The final 0 is the clean end: the last solver
step lands on x0_hat. For a process whose t_min is 0 (rectified flow), the ``steps`` intervals
are equal: t = 1, (N-1)/N, ..., 1/N, 0 (Liu et al.'s N-step Euler).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from torch import Tensor

from components.grids.base import check_steps, finish, fractions
from components.noise.base import NoiseProcess
from components.spec import Spec


class UniformSpec(Spec):
    kind: Literal["uniform"] = "uniform"

    def build(self) -> Uniform:
        return Uniform()


class Uniform:
    def __call__(self, process: NoiseProcess, steps: int) -> Tensor:
        check_steps(process, steps)
        if process.timesteps is not None:  # diffusers' "linspace" exactly (numpy's rounding of ties)
            T = process.timesteps
            timestep = np.linspace(0, T - 1, steps, dtype=np.float64).round()[::-1].copy()
            if steps == 1:  # linspace(0, T - 1, 1) = [0]; the grid starts at t_max
                timestep[0] = T - 1
            return finish(process, (torch.from_numpy(timestep) + 1) / T)
        u = fractions(steps, ends_at_zero=process.t_min == 0)
        return finish(process, process.t_min + (process.t_max - process.t_min) * u)
