"""Quadratic time grid (Song, Meng & Ermon 2021, DDIM section 5 / appendix D.2, "quadratic"
skipping): t_i = t_min + (t_max - t_min) u_i^2 for u evenly spaced from 1 to 0, so steps are
dense near the data, where the trajectory bends most. Snapped onto discrete chains.
"""

from __future__ import annotations

from typing import Literal

from torch import Tensor

from components.grids.base import check_steps, finish, fractions
from components.noise.base import NoiseProcess
from components.spec import Spec


class QuadraticSpec(Spec):
    kind: Literal["quadratic"] = "quadratic"

    def build(self) -> Quadratic:
        return Quadratic()


class Quadratic:
    def __call__(self, process: NoiseProcess, steps: int) -> Tensor:
        check_steps(process, steps)
        u = fractions(steps, ends_at_zero=process.t_min == 0)
        return finish(process, process.t_min + (process.t_max - process.t_min) * u**2)
