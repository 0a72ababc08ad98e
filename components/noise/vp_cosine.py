"""VP with the cosine schedule of improved DDPM (Nichol & Dhariwal 2021, eq. 17).

alphabar(t) = f(t) / f(0),  f(t) = cos^2( (t + s) / (1 + s) * pi / 2 ),  s = 0.008.
Discrete (timesteps=T): beta_n = min(1 - alphabar(n/T) / alphabar((n-1)/T), max_beta), as the
paper clips betas at 0.999 to avoid the singularity at t = 1. Continuous: the closed form on
[eps_t, t_max], t_max < 1 keeping alpha > 0.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import Field
from torch import Tensor

from components.noise.base import VPProcess, table_from_betas
from components.spec import Spec


class VpCosineSpec(Spec):
    kind: Literal["vp_cosine"] = "vp_cosine"
    s: float = Field(0.008, ge=0, lt=1, description="offset that keeps beta_1 from being too small")
    max_beta: float = Field(0.999, gt=0, lt=1, description="clip of the discrete betas")
    timesteps: int | None = Field(1000, ge=2, description="T of the discrete chain; None = continuous")
    eps_t: float = Field(1e-5, gt=0, lt=0.1, description="smallest t of the continuous process")
    t_max: float = Field(0.9946, gt=0.5, lt=1, description="largest t of the continuous process")

    def build(self) -> VpCosine:
        return VpCosine(self)


class VpCosine(VPProcess):
    def __init__(self, spec: VpCosineSpec):
        self.spec = spec
        self.s = spec.s
        self._log_f0 = 2 * math.log(math.cos(self.s / (1 + self.s) * math.pi / 2))
        table = None
        if spec.timesteps is not None:
            T = spec.timesteps
            n = torch.arange(T + 1, dtype=torch.float64) / T
            ab = (self._log_alphabar_continuous(n)).exp()
            betas = (1 - ab[1:] / ab[:-1]).clamp(max=spec.max_beta)
            table = table_from_betas(betas)
        super().__init__(spec.timesteps, table, spec.eps_t)
        if spec.timesteps is None:
            self.t_max = spec.t_max

    def _log_alphabar_continuous(self, t: Tensor) -> Tensor:
        angle = (t + self.s) / (1 + self.s) * math.pi / 2
        return 2 * torch.log(torch.cos(angle).clamp_min(1e-20)) - self._log_f0

    def _t_from_log_alphabar_continuous(self, lab: Tensor) -> Tensor:
        angle = torch.acos(torch.exp(0.5 * (lab + self._log_f0)).clamp(max=1.0))
        return angle * 2 / math.pi * (1 + self.s) - self.s
