"""VP with linearly increasing betas: DDPM (Ho et al. 2020) and the VP SDE (Song et al. 2021).

Discrete (timesteps=T): beta_n = linspace(beta_min/T, beta_max/T, T), so beta_min=0.1,
beta_max=20, T=1000 is DDPM's 1e-4..0.02; alphabar_n = prod_{i<=n} (1 - beta_i) (Ho eq. 4).
Continuous (timesteps=None): beta(t) = beta_min + t (beta_max - beta_min), so
log alphabar(t) = -(beta_min t + (beta_max - beta_min) t^2 / 2) (Song et al. eq. 33).
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, model_validator
from torch import Tensor

from components.noise.base import VPProcess, table_from_betas
from components.spec import Spec


class VpLinearSpec(Spec):
    kind: Literal["vp_linear"] = "vp_linear"
    beta_min: float = Field(0.1, gt=0, description="beta at t=0, in units of 1/T (DDPM: 0.1 -> 1e-4)")
    beta_max: float = Field(20.0, gt=0, description="beta at t=1, in units of 1/T (DDPM: 20 -> 0.02)")
    timesteps: int | None = Field(1000, ge=2, description="T of the discrete chain; None = continuous")
    eps_t: float = Field(1e-5, gt=0, lt=0.1, description="smallest t of the continuous process")

    @model_validator(mode="after")
    def _increasing(self) -> VpLinearSpec:
        if self.beta_max <= self.beta_min:
            raise ValueError(f"beta_max ({self.beta_max}) must exceed beta_min ({self.beta_min})")
        if self.timesteps is not None and self.beta_max / self.timesteps >= 1:
            raise ValueError(f"beta_max/timesteps = {self.beta_max / self.timesteps} must be < 1")
        return self

    def build(self) -> VpLinear:
        return VpLinear(self)


class VpLinear(VPProcess):
    def __init__(self, spec: VpLinearSpec):
        self.spec = spec
        self.b0, self.b1 = spec.beta_min, spec.beta_max
        table = None
        if spec.timesteps is not None:
            T = spec.timesteps
            betas = torch.linspace(self.b0 / T, self.b1 / T, T, dtype=torch.float64)
            table = table_from_betas(betas)
        super().__init__(spec.timesteps, table, spec.eps_t)

    def _log_alphabar_continuous(self, t: Tensor) -> Tensor:
        return -(self.b0 * t + 0.5 * (self.b1 - self.b0) * t**2)

    def _t_from_log_alphabar_continuous(self, lab: Tensor) -> Tensor:
        # root of (b1 - b0)/2 t^2 + b0 t + lab = 0
        d = self.b1 - self.b0
        return (-self.b0 + torch.sqrt(self.b0**2 - 2 * d * lab)) / d

    @property
    def betas(self) -> Tensor:
        T = self.spec.timesteps
        return torch.linspace(self.b0 / T, self.b1 / T, T, dtype=torch.float64)
