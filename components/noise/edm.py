"""The EDM process (Karras et al. 2022, section 3 and Table 1, "Ours"):

    alpha(t) = 1,   sigma(t) = t,   t in [sigma_min, sigma_max] = [0.002, 80].

Time *is* the noise level, so the probability-flow ODE is dx/dsigma = eps_hat (eq. 4 with
s(t) = 1, sigma(t) = t): the straightest of the common choices. log-SNR = -2 log t. The prior is
N(0, sigma_max^2 I); training times for objectives that ask the process (``sample_t``) are
log-uniform on [sigma_min, sigma_max] (the EDM loss draws its own lognormal sigmas). The
backbone's c_noise is ln(sigma) / 4, EDM's own preconditioning.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import Field, model_validator
from torch import Tensor

from components.noise.base import NoiseProcess
from components.random import RandomSource
from components.spec import Spec


class EdmProcessSpec(Spec):
    kind: Literal["edm"] = "edm"
    sigma_min: float = Field(0.002, gt=0, description="smallest sigma = t sampled from")
    sigma_max: float = Field(80.0, gt=0, description="largest sigma = t, the prior's std")

    @model_validator(mode="after")
    def _ordered(self) -> EdmProcessSpec:
        if self.sigma_max <= self.sigma_min:
            raise ValueError(f"sigma_max ({self.sigma_max}) must exceed sigma_min ({self.sigma_min})")
        return self

    def build(self) -> EdmProcess:
        return EdmProcess(self)


class EdmProcess(NoiseProcess):
    def __init__(self, spec: EdmProcessSpec):
        self.spec = spec
        self.t_min, self.t_max = spec.sigma_min, spec.sigma_max

    def alpha(self, t: Tensor) -> Tensor:
        return torch.ones_like(t)

    def sigma(self, t: Tensor) -> Tensor:
        return t.clone()

    def log_snr(self, t: Tensor) -> Tensor:
        return (-2 * t.double().log()).to(t.dtype)

    def derivatives(self, t: Tensor) -> tuple[Tensor, Tensor]:
        return torch.zeros_like(t), torch.ones_like(t)

    def t_from_sigma(self, sigma: Tensor) -> Tensor:
        return sigma.clone()

    def t_from_log_snr(self, log_snr: Tensor) -> Tensor:
        return (-0.5 * log_snr.double()).exp().to(log_snr.dtype)

    def prior_std(self) -> float:
        return self.t_max

    def sample_t(self, rng: RandomSource) -> Tensor:
        lo, hi = math.log(self.t_min), math.log(self.t_max)
        return (lo + (hi - lo) * rng.rand()).exp()

    def model_time(self, t: Tensor) -> Tensor:
        return t.double().log().div(4).to(t.dtype)
