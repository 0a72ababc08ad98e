"""VP with "scaled linear" betas, the schedule of latent diffusion and Stable Diffusion
(Rombach et al. 2022; diffusers' beta_schedule="scaled_linear"): sqrt(beta_n) is linear,
beta_n = linspace(sqrt(beta_start), sqrt(beta_end), T)_n^2, alphabar_n = prod_{i<=n} (1 - beta_i)
(Ho et al. eq. 4). Stable Diffusion: beta_start 0.00085, beta_end 0.012, T = 1000. Discrete only.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, model_validator
from torch import Tensor

from components.noise.base import VPProcess, table_from_betas
from components.spec import Spec


class VpScaledLinearSpec(Spec):
    kind: Literal["vp_scaled_linear"] = "vp_scaled_linear"
    beta_start: float = Field(0.00085, gt=0, lt=1)
    beta_end: float = Field(0.012, gt=0, lt=1)
    timesteps: int = Field(1000, ge=2, description="T of the discrete chain")

    @model_validator(mode="after")
    def _increasing(self) -> VpScaledLinearSpec:
        if self.beta_end <= self.beta_start:
            raise ValueError(f"beta_end ({self.beta_end}) must exceed beta_start ({self.beta_start})")
        return self

    def build(self) -> VpScaledLinear:
        return VpScaledLinear(self)


class VpScaledLinear(VPProcess):
    def __init__(self, spec: VpScaledLinearSpec):
        self.spec = spec
        super().__init__(spec.timesteps, table_from_betas(self.betas), 1.0 / spec.timesteps)

    @property
    def betas(self) -> Tensor:
        s = self.spec
        return torch.linspace(s.beta_start**0.5, s.beta_end**0.5, s.timesteps, dtype=torch.float64) ** 2
