"""x0-prediction: the backbone predicts the clean sample; eps = (x_t - alpha x0) / sigma."""

from __future__ import annotations

from typing import Literal

from torch import Tensor

from components.denoisers.base import Plain
from components.noise.base import NoiseProcess
from components.spec import Spec
from components.util import bcast


class X0Spec(Spec):
    kind: Literal["x0"] = "x0"

    def build(self) -> X0:
        return X0()


class X0(Plain):
    def to_x0_eps(self, out: Tensor, x: Tensor, t: Tensor, process: NoiseProcess) -> tuple[Tensor, Tensor]:
        a, s = bcast(process.alpha(t), x), bcast(process.sigma(t), x)
        return out, (x - a * out) / s.clamp_min(1e-12)
