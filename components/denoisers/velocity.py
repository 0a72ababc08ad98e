"""Velocity prediction (rectified flow, flow matching): u = alpha'(t) x0 + sigma'(t) eps.

Solving [alpha sigma; alpha' sigma'] [x0; eps] = [x_t; u] with det = alpha sigma' - sigma alpha':
x0 = (sigma' x_t - sigma u) / det,  eps = (alpha u - alpha' x_t) / det.
For rectified flow (alpha = 1 - t, sigma = t): det = 1, x0 = x_t - t u, eps = x_t + (1 - t) u.
"""

from __future__ import annotations

from typing import Literal

from torch import Tensor

from components.denoisers.base import Plain
from components.noise.base import NoiseProcess
from components.spec import Spec
from components.util import bcast


class VelocitySpec(Spec):
    kind: Literal["velocity"] = "velocity"

    def build(self) -> Velocity:
        return Velocity()


class Velocity(Plain):
    def to_x0_eps(self, out: Tensor, x: Tensor, t: Tensor, process: NoiseProcess) -> tuple[Tensor, Tensor]:
        a, s = bcast(process.alpha(t), x), bcast(process.sigma(t), x)
        da, ds = (bcast(d, x) for d in process.derivatives(t))
        det = a * ds - s * da
        return (ds * x - s * out) / det, (a * out - da * x) / det
