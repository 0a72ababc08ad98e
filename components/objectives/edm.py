"""The EDM training loss (Karras et al. 2022, section 5, eq. 8 and Table 1 "Ours"):

    L = E_{s, x0, eps} lambda(s) || D(x0 + s eps; s) - x0 ||^2,
    ln(s) ~ N(P_mean, P_std^2),   lambda(s) = (s^2 + sigma_data^2) / (s sigma_data)^2,

with s EDM's sigma (= sigma / alpha of any process). lambda makes the effective training target
of F unit-variance at every noise level under the EDM preconditioning. Each drawn s is laid on
the model's process at t = process.t_from_ve_sigma(s) (the EDM process: t = s), so x_t =
alpha x0 + sigma eps is exactly alpha (x0 + s eps); the weight uses the s the process realizes
there (a discrete chain clamps to its range). The squared error is averaged over dimensions
(NVlabs/edm sums; the two differ by a constant factor).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field
from torch import Tensor

from components.denoisers.base import Denoiser
from components.objectives.base import Objective
from components.random import RandomSource
from components.spec import Spec


class EdmLossSpec(Spec):
    kind: Literal["edm"] = "edm"
    p_mean: float = Field(-1.2, description="mean of ln(sigma)")
    p_std: float = Field(1.2, gt=0, description="std of ln(sigma)")
    sigma_data: float = Field(0.5, gt=0, description="as in the EDM preconditioning")

    def build(self) -> EdmLoss:
        return EdmLoss(self)


class EdmLoss(Objective):
    def __init__(self, spec: EdmLossSpec):
        super().__init__()
        self.spec = spec

    def weight(self, s: Tensor) -> Tensor:
        sd = self.spec.sigma_data
        return (s**2 + sd**2) / (s * sd) ** 2

    def loss(
        self, denoiser: Denoiser, batch: dict[str, Any], rng: RandomSource, step: int
    ) -> tuple[Tensor, dict[str, Tensor]]:
        x0 = batch["x0"]
        process = denoiser.process
        s = (self.spec.p_mean + self.spec.p_std * rng.randn()).exp().double()
        t = process.t_from_ve_sigma(s).float().to(x0.device)
        eps = rng.randn(*x0.shape[1:]).to(x0)
        x_t = process.add_noise(x0, eps, t)
        pred = denoiser(x_t, t, batch.get("cond"))
        mse = (pred.x0.float() - x0.float()).pow(2).flatten(1).mean(1)
        w = self.weight(process.ve_sigma(t.double())).float().to(mse.device)
        return (w * mse).mean(), {"mse": mse.mean().detach()}
