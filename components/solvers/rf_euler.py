"""Rectified-flow Euler (Liu et al. 2022, section 2.1): Euler steps of dx/dt = v(x, t) in the
process's own time and scaling, with the velocity v = alpha'(t) x0_hat + sigma'(t) eps_hat of
the path (for rectified flow: eps_hat - x0_hat, the regressed velocity itself):

    x_{i+1} = x_i + (t_{i+1} - t_i) v(x_i, t_i).

On the straight path of rectified flow this coincides with the EDM-form Euler step (both give
(1 - t_{i+1}) x0_hat + t_{i+1} eps_hat); on curved paths (VP, VE) it is a different, usually
worse, discretization. Like the path it integrates, it ends at the path's own x(0), which for
VE and sigma_min > 0 carries a trace sigma(0) eps_hat of noise (as those papers sample).
"""

from __future__ import annotations

from typing import Literal

from torch import Tensor

from components.denoisers.base import DenoiseFn
from components.noise.base import NoiseProcess
from components.random import RandomSource
from components.solvers.base import at, derivative_at
from components.spec import Spec


class RfEulerSpec(Spec):
    kind: Literal["rf_euler"] = "rf_euler"

    def build(self) -> RfEuler:
        return RfEuler()


class RfEuler:
    def __call__(self, denoise: DenoiseFn, process: NoiseProcess, x: Tensor, ts: Tensor, rng: RandomSource) -> Tensor:
        for t, s in zip(ts[:-1], ts[1:]):
            pred = denoise(x, at(t, x))
            x = x + float(s - t) * pred.velocity(*derivative_at(process, t))
        return x
