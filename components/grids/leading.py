"""diffusers' "leading" timestep spacing (Lin et al. 2024, "Common Diffusion Noise Schedules and
Sample Steps are Flawed", Table 2): on a T-step chain the 0-based timesteps are
(N-1) r, ..., r, 0 plus ``offset`` with r = T // N (Stable Diffusion uses offset = 1), i.e.
t = (timestep + 1) / T. It never starts at the last step T, which is why Lin et al. recommend
"trailing". On a continuous process: t_i = t_min + (t_max - t_min) (N - 1 - i) / N.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
from pydantic import Field
from torch import Tensor

from components.grids.base import check_steps, finish
from components.noise.base import NoiseProcess
from components.spec import Spec


class LeadingSpec(Spec):
    kind: Literal["leading"] = "leading"
    starts_below_t_max: ClassVar[str] = (
        "diffusers' leading spacing starts at (N - 1) T // N + 1, below T, by definition (Lin et al. 2024 Table 2); "
        "use trailing to start at T"
    )
    offset: int = Field(0, ge=0, description="diffusers' steps_offset (Stable Diffusion: 1)")

    def build(self) -> Leading:
        return Leading(self)


class Leading:
    def __init__(self, spec: LeadingSpec):
        self.spec = spec

    def __call__(self, process: NoiseProcess, steps: int) -> Tensor:
        check_steps(process, steps)
        i = torch.arange(steps - 1, -1, -1, dtype=torch.float64)
        T = process.timesteps
        if T is not None:
            timestep = i * (T // steps) + self.spec.offset
            if timestep[0] > T - 1:
                raise ValueError(f"leading grid: offset={self.spec.offset} puts timestep {int(timestep[0])} past the chain's {T - 1}")
            return finish(process, (timestep + 1) / T)
        if process.t_min == 0:
            raise ValueError(f"leading grid ends at t_min = 0 on {process!r}; use the trailing or uniform grid")
        return finish(process, process.t_min + (process.t_max - process.t_min) * i / steps)
