"""eps-prediction (Ho et al. 2020): the backbone predicts the noise; x0 = (x_t - sigma eps) / alpha."""

from __future__ import annotations

from typing import Literal

from torch import Tensor

from components.denoisers.base import Plain
from components.noise.base import NoiseProcess
from components.spec import Spec
from components.util import bcast


class EpsSpec(Spec):
    kind: Literal["eps"] = "eps"

    def build(self) -> Eps:
        return Eps()


class Eps(Plain):
    def to_x0_eps(self, out: Tensor, x: Tensor, t: Tensor, process: NoiseProcess) -> tuple[Tensor, Tensor]:
        a, s = bcast(process.alpha(t), x), bcast(process.sigma(t), x)
        return (x - s * out) / a, out
