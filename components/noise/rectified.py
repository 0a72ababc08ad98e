"""The straight path of rectified flow (Liu et al. 2022) and flow matching (Lipman et al. 2023):

    alpha(t) = 1 - t,   sigma(t) = sigma_min + (1 - sigma_min) t,   t in [0, 1].

sigma_min = 0 is rectified flow / I-CFM: x_t = (1 - t) x0 + t eps, velocity eps - x0.
sigma_min > 0 is Lipman et al.'s conditional OT path (eq. 20, with their time reversed, t -> 1 - t:
data at t = 0, noise at t = 1), velocity (1 - sigma_min) eps - x0.

Inverses: t = (sigma - sigma_min) / (1 - sigma_min); with r = exp(log_snr / 2) = alpha / sigma,
t = (1 - r sigma_min) / (1 + r (1 - sigma_min)). At t = 1, alpha = 0: the prior N(0, I) carries
no trace of the data, the log-SNR is -inf and sigma/alpha is infinite. The backbone's c_noise is
999 t, as in Liu et al.'s code.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import Tensor

from components.noise.base import NoiseProcess
from components.spec import Spec


class RectifiedSpec(Spec):
    kind: Literal["rectified"] = "rectified"
    sigma_min: float = Field(0.0, ge=0, lt=1, description="Lipman et al.'s sigma_min; 0 = rectified flow")

    def build(self) -> Rectified:
        return Rectified(self)


class Rectified(NoiseProcess):
    t_min, t_max = 0.0, 1.0

    def __init__(self, spec: RectifiedSpec):
        self.spec = spec
        self.smin = spec.sigma_min

    def alpha(self, t: Tensor) -> Tensor:
        return 1 - t

    def sigma(self, t: Tensor) -> Tensor:
        return self.smin + (1 - self.smin) * t

    def derivatives(self, t: Tensor) -> tuple[Tensor, Tensor]:
        return torch.full_like(t, -1.0), torch.full_like(t, 1 - self.smin)

    def t_from_sigma(self, sigma: Tensor) -> Tensor:
        return (sigma - self.smin) / (1 - self.smin)

    def t_from_log_snr(self, log_snr: Tensor) -> Tensor:
        r = (0.5 * log_snr.double()).exp()
        return ((1 - r * self.smin) / (1 + r * (1 - self.smin))).to(log_snr.dtype)
