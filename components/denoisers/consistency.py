"""The consistency parameterization (Song et al. 2023, "Consistency Models", eq. 5 and
appendix C), on any process and any backbone:

    f(x, s) = c_skip(s) x~ + c_out(s) F(c_in(s) x~; c_noise(s)),
    c_skip(s) = sd^2 / ((s - s_min)^2 + sd^2),   c_out(s) = sd (s - s_min) / sqrt(s^2 + sd^2),
    c_in(s) = 1 / sqrt(s^2 + sd^2),              c_noise(s) = scale * ln(s),

in EDM's sigma s = sigma / alpha on the scaled path x~ = x / alpha, with s_min the process's
own at t_min (CM's epsilon). c_skip(s_min) = 1 and c_out(s_min) = 0 exactly, so the boundary
condition f(x, t_min) = x~ holds exactly (= x on the EDM process). f is x0_hat. Written in
alpha/sigma form (c_skip x~ = sd^2 alpha x / ((sigma - alpha s_min)^2 + alpha^2 sd^2), c_out =
sd (sigma - alpha s_min) / sqrt(sigma^2 + alpha^2 sd^2)), finite where alpha = 0. openai's
consistency_models and diffusers' CMStochasticIterativeScheduler use c_noise = 250 ln(s)
(``c_noise_scale=250``); the zoo's default 0.25 ln(s) is EDM's.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import Tensor

from components.noise.base import NoiseProcess
from components.spec import Spec
from components.util import bcast


class ConsistencySpec(Spec):
    kind: Literal["consistency"] = "consistency"
    sigma_data: float = Field(0.5, gt=0, description="std of the data (CM: 0.5 for images in [-1, 1])")
    c_noise_scale: float = Field(0.25, gt=0, description="c_noise = scale * ln(s); openai/diffusers CM: 250")

    def build(self) -> Consistency:
        return Consistency(self)


class Consistency:
    def __init__(self, spec: ConsistencySpec):
        self.spec = spec
        self.sd = spec.sigma_data

    @staticmethod
    def s_min(process: NoiseProcess) -> Tensor:
        """CM's epsilon in EDM's sigma, at t_min as the denoiser sees it (float32), so that
        f(x, t_min) = x~ holds bit for bit."""
        return process.ve_sigma(torch.tensor(process.t_min, dtype=torch.float32).double())

    def _a_sg(self, t: Tensor, process: NoiseProcess) -> tuple[Tensor, Tensor]:
        t64 = t.double()
        return process.alpha(t64), process.sigma(t64)

    def precondition(self, x: Tensor, t: Tensor, process: NoiseProcess) -> tuple[Tensor, Tensor]:
        a, sg = self._a_sg(t, process)
        s = sg / a.clamp_min(1e-20)
        c_noise = (self.spec.c_noise_scale * s.log()).to(torch.float32)
        return bcast(1 / (sg**2 + a**2 * self.sd**2).sqrt(), x) * x, c_noise  # c_in x~ = x / sqrt(...)

    def to_x0_eps(self, out: Tensor, x: Tensor, t: Tensor, process: NoiseProcess) -> tuple[Tensor, Tensor]:
        a, sg = self._a_sg(t, process)
        gap = sg - a * self.s_min(process).to(a.device)  # alpha (s - s_min)
        skip = self.sd**2 * a / (gap**2 + a**2 * self.sd**2)  # c_skip / alpha
        c_out = self.sd * gap / (sg**2 + a**2 * self.sd**2).sqrt()
        x0 = bcast(skip, x) * x + bcast(c_out, x) * out
        eps = (x - bcast(a, x) * x0) / bcast(sg, x).clamp_min(1e-12)
        return x0, eps
