"""diffusers' "trailing" timestep spacing (Lin et al. 2024, Table 2): on a T-step chain the
0-based timesteps are round(T - i T / N) - 1 for i < N, i.e. t = round(T - i T / N) / T: the grid
starts at the last step T (pure noise on a zero-terminal-SNR schedule). On a continuous process:
t_i = t_min + (t_max - t_min) (N - i) / N, which for rectified flow is its N-step Euler grid.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from components.grids.base import check_steps, finish
from components.noise.base import NoiseProcess
from components.spec import Spec


class TrailingSpec(Spec):
    kind: Literal["trailing"] = "trailing"

    def build(self) -> Trailing:
        return Trailing()


class Trailing:
    def __call__(self, process: NoiseProcess, steps: int) -> Tensor:
        check_steps(process, steps)
        i = torch.arange(steps, dtype=torch.float64)
        T = process.timesteps
        if T is not None:
            return finish(process, (T - i * T / steps).round() / T)
        return finish(process, process.t_min + (process.t_max - process.t_min) * (steps - i) / steps)
