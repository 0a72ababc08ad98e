"""Variance exploding (NCSN / SMLD; the VE SDE of Song et al. 2021, eq. 30):

    alpha(t) = 1,   sigma(t) = sigma_min (sigma_max / sigma_min)^t,   t in [eps_t, 1].

log-SNR = -2 log sigma, so t = log(sigma / sigma_min) / log(sigma_max / sigma_min). The prior is
N(0, sigma_max^2 I). sigma(0) = sigma_min is not 0: solvers treat a grid's final t = 0 as the
clean end (sigma = 0), which is Song et al.'s final denoising step. The backbone's c_noise is
ln(sigma / 2), EDM's VE preconditioning (Karras et al. 2022, Table 1).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import Field, model_validator
from torch import Tensor

from components.noise.base import NoiseProcess
from components.spec import Spec


class VeSpec(Spec):
    kind: Literal["ve"] = "ve"
    sigma_min: float = Field(0.01, gt=0, description="sigma at t = 0 (Song et al.: 0.01)")
    sigma_max: float = Field(50.0, gt=0, description="sigma at t = 1, the prior's std (CIFAR-10: 50)")
    eps_t: float = Field(1e-5, gt=0, lt=0.1, description="smallest t trained on and sampled from")

    @model_validator(mode="after")
    def _ordered(self) -> VeSpec:
        if self.sigma_max <= self.sigma_min:
            raise ValueError(f"sigma_max ({self.sigma_max}) must exceed sigma_min ({self.sigma_min})")
        return self

    def build(self) -> Ve:
        return Ve(self)


class Ve(NoiseProcess):
    def __init__(self, spec: VeSpec):
        self.spec = spec
        self.smin, self.smax = spec.sigma_min, spec.sigma_max
        self._log_ratio = math.log(spec.sigma_max / spec.sigma_min)
        self.t_min, self.t_max = spec.eps_t, 1.0

    def alpha(self, t: Tensor) -> Tensor:
        return torch.ones_like(t)

    def sigma(self, t: Tensor) -> Tensor:
        return (math.log(self.smin) + t.double() * self._log_ratio).exp().to(t.dtype)

    def log_snr(self, t: Tensor) -> Tensor:
        return (-2 * (math.log(self.smin) + t.double() * self._log_ratio)).to(t.dtype)

    def derivatives(self, t: Tensor) -> tuple[Tensor, Tensor]:
        return torch.zeros_like(t), self.sigma(t) * self._log_ratio

    def t_from_sigma(self, sigma: Tensor) -> Tensor:
        return ((sigma.double().log() - math.log(self.smin)) / self._log_ratio).to(sigma.dtype)

    def t_from_log_snr(self, log_snr: Tensor) -> Tensor:
        return ((-0.5 * log_snr.double() - math.log(self.smin)) / self._log_ratio).to(log_snr.dtype)

    def prior_std(self) -> float:
        return self.smax

    def model_time(self, t: Tensor) -> Tensor:
        return (self.sigma(t.double()) / 2).log().to(t.dtype)
