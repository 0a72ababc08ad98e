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
from components.solvers.base import SolverTraits, StepSolver, model_t
from components.util import bcast, per_time
from components.spec import Spec


class RfEulerSpec(SolverTraits, Spec):
    kind: Literal["rf_euler"] = "rf_euler"

    def build(self) -> RfEuler:
        return RfEuler()


class RfEuler(StepSolver):
    def step(
        self, denoise: DenoiseFn, process: NoiseProcess, x: Tensor, t: Tensor, s: Tensor, rng: RandomSource
    ) -> Tensor:
        pred = denoise(x, model_t(t, x))
        t64 = t.double()
        return x + bcast(s.double() - t64, x) * pred.velocity(*per_time(process.derivatives, t64))
