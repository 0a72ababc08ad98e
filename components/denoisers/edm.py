"""EDM preconditioning (Karras et al. 2022, section 5, eq. 7 and Table 1), on any process.

EDM writes every model in its sigma, s = sigma / alpha, on the scaled path
x~ = x / alpha = x0 + s eps (eq. 4 with scaling alpha), and wraps the backbone F as

    D(x~; s) = c_skip(s) x~ + c_out(s) F(c_in(s) x~; c_noise(s))          (eq. 7)

with the rows of Table 1 (sigma_data = sd; M, beta_d, beta_min those of the VP SDE):

    edm  c_skip = sd^2/(s^2+sd^2)  c_out = s sd/sqrt(s^2+sd^2)  c_in = 1/sqrt(s^2+sd^2)  c_noise = ln(s)/4
    vp   c_skip = 1                c_out = -s                   c_in = 1/sqrt(s^2+1)     c_noise = (M-1) t_vp(s)
    ve   c_skip = 1                c_out = s                    c_in = 1                 c_noise = ln(s/2)

t_vp(s) = (sqrt(beta_min^2 + 2 beta_d ln(1 + s^2)) - beta_min) / beta_d inverts the VP SDE's
s(t) = sqrt(exp(beta_d t^2 / 2 + beta_min t) - 1). D is x0_hat. The edm row is evaluated in
alpha/sigma form (c_in x~ = x / sqrt(sigma^2 + alpha^2 sd^2), c_skip x~ = sd^2 alpha x /
(sigma^2 + alpha^2 sd^2), c_out = sigma sd / sqrt(sigma^2 + alpha^2 sd^2)), which stays finite
where alpha = 0 (the rectified prior); the vp and ve rows need alpha > 0 (they have c_skip = 1).
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import Tensor

from components.noise.base import NoiseProcess
from components.spec import Spec
from components.util import bcast


class EdmPrecondSpec(Spec):
    kind: Literal["edm"] = "edm"
    sigma_data: float = Field(0.5, gt=0, description="std of the data (EDM: 0.5 for images in [-1, 1])")
    preconditioning: Literal["edm", "vp", "ve"] = Field("edm", description="the row of EDM Table 1")
    vp_beta_d: float = Field(19.9, gt=0, description="beta_d of the vp row's c_noise")
    vp_beta_min: float = Field(0.1, gt=0, description="beta_min of the vp row's c_noise")
    vp_m: int = Field(1000, ge=2, description="M of the vp row's c_noise = (M - 1) t")

    def build(self) -> EdmPrecond:
        return EdmPrecond(self)


class EdmPrecond:
    def __init__(self, spec: EdmPrecondSpec):
        self.spec = spec
        self.sd = spec.sigma_data
        self.row = spec.preconditioning

    def t_vp(self, s: Tensor) -> Tensor:
        b_d, b_min = self.spec.vp_beta_d, self.spec.vp_beta_min
        return ((b_min**2 + 2 * b_d * torch.log1p(s**2)).sqrt() - b_min) / b_d

    def scalings(self, s: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(c_skip, c_out, c_in, c_noise) of Table 1 at EDM sigmas ``s``."""
        s = torch.as_tensor(s, dtype=torch.float64)
        one = torch.ones_like(s)
        if self.row == "edm":
            sd = self.sd
            return sd**2 / (s**2 + sd**2), s * sd / (s**2 + sd**2).sqrt(), 1 / (s**2 + sd**2).sqrt(), s.log() / 4
        if self.row == "vp":
            return one, -s, 1 / (s**2 + 1).sqrt(), (self.spec.vp_m - 1) * self.t_vp(s)
        return one, s, one, (s / 2).log()

    def _alpha_sigma(self, x: Tensor, t: Tensor, process: NoiseProcess) -> tuple[Tensor, Tensor, Tensor]:
        t64 = t.double()
        a, sg = process.alpha(t64), process.sigma(t64)
        return a, sg, sg / a.clamp_min(1e-20)

    def precondition(self, x: Tensor, t: Tensor, process: NoiseProcess) -> tuple[Tensor, Tensor]:
        a, sg, s = self._alpha_sigma(x, t, process)
        c_noise = self.scalings(s)[3].to(torch.float32)
        if self.row == "edm":
            scale = 1 / (sg**2 + a**2 * self.sd**2).sqrt()  # c_in / alpha
        else:
            scale = self.scalings(s)[2] / a
        return bcast(scale, x) * x, c_noise

    def to_x0_eps(self, out: Tensor, x: Tensor, t: Tensor, process: NoiseProcess) -> tuple[Tensor, Tensor]:
        a, sg, s = self._alpha_sigma(x, t, process)
        if self.row == "edm":
            den = sg**2 + a**2 * self.sd**2
            skip, c_out = self.sd**2 * a / den, sg * self.sd / den.sqrt()  # c_skip / alpha, c_out
        else:
            c_skip, c_out, _, _ = self.scalings(s)
            skip = c_skip / a
        x0 = bcast(skip, x) * x + bcast(c_out, x) * out
        eps = (x - bcast(a, x) * x0) / bcast(sg, x).clamp_min(1e-12)
        return x0, eps


