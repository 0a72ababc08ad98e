"""v-prediction (Salimans & Ho 2022): v = alpha eps - sigma x0.

With x_t = alpha x0 + sigma eps, for any alpha, sigma (not only VP):
x0 = (alpha x_t - sigma v) / (alpha^2 + sigma^2),  eps = (sigma x_t + alpha v) / (alpha^2 + sigma^2).
"""

from __future__ import annotations

from typing import Literal

from torch import Tensor

from components.denoisers.base import Plain
from components.noise.base import NoiseProcess
from components.spec import Spec
from components.util import bcast


class VSpec(Spec):
    kind: Literal["v"] = "v"

    def build(self) -> V:
        return V()


class V(Plain):
    def to_x0_eps(self, out: Tensor, x: Tensor, t: Tensor, process: NoiseProcess) -> tuple[Tensor, Tensor]:
        a, s = bcast(process.alpha(t), x), bcast(process.sigma(t), x)
        norm = a * a + s * s
        return (a * x - s * out) / norm, (s * x + a * out) / norm
