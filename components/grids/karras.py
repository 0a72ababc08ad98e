"""Karras et al. (2022) noise levels, eq. 5, in EDM's sigma (sigma / alpha) of any process:

    s_i = (s_max^(1/rho) + i / (N - 1) (s_min^(1/rho) - s_max^(1/rho)))^rho,  i < N,  then 0,

rho = 7 by default; t_i = process.t_from_ve_sigma(s_i). s_min and s_max default to the process's
sigma/alpha at t_min and t_max (EDM: 0.002 and 80). With s_min = 0 (rectified flow at t = 0) the
N levels stop one interval short of 0, so 0 is the (N+1)-th. Discrete chains keep the fractional
times (as k-diffusion and diffusers' use_karras_sigmas do).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from torch import Tensor

from components.grids.base import check_steps, finish, fractions, ve_sigma_range
from components.noise.base import NoiseProcess
from components.spec import Spec


class KarrasSpec(Spec):
    kind: Literal["karras"] = "karras"
    rho: float = Field(7.0, gt=0, description="rho of eq. 5; 7 in EDM, 1 is uniform in sigma")
    sigma_min: float | None = Field(None, ge=0, description="smallest sigma/alpha; None = the process's at t_min")
    sigma_max: float | None = Field(None, gt=0, description="largest sigma/alpha; None = the process's at t_max")

    def build(self) -> Karras:
        return Karras(self)


class Karras:
    def __init__(self, spec: KarrasSpec):
        self.spec = spec

    def sigmas(self, process: NoiseProcess, steps: int) -> Tensor:
        """The N sigmas of eq. 5 (without the final 0)."""
        lo, hi = ve_sigma_range(process, self.spec.sigma_min, self.spec.sigma_max, "karras")
        inv = 1 / self.spec.rho
        u = fractions(steps, ends_at_zero=lo == 0)
        return (lo**inv + u * (hi**inv - lo**inv)) ** self.spec.rho

    def __call__(self, process: NoiseProcess, steps: int) -> Tensor:
        check_steps(process, steps)
        return finish(process, process.t_from_ve_sigma(self.sigmas(process, steps)), snap=False)


