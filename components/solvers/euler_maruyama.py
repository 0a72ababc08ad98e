"""Euler-Maruyama on the reverse-time SDE (Song et al. 2021, eq. 6; their "Euler-Maruyama"
predictor), in the process's own time t, for any process.

The forward SDE of x_t = alpha x0 + sigma eps is dx = f x dt + g dw with
f = alpha'/alpha and g^2 = d(sigma^2)/dt - 2 f sigma^2 (Kingma et al. 2021, appendix A.1; VP:
g^2 = beta(t); VE: d(sigma^2)/dt; EDM: 2t). Its reverse, with score = -eps_hat / sigma, is
dx = [f x + g^2 eps_hat / sigma] dt + g dw_bar, and one step from t down to s (h = t - s) is

    x_s = x_t - h (f x_t + g^2 eps_hat / sigma_t) + g sqrt(h) z.

The step to the clean end t = 0 returns x0_hat (Song et al.'s final denoising). A step from a
time where alpha = 0 (rectified flow's prior, where f and g diverge) samples the posterior
q(x_s | x_t, x0_hat) = N(alpha_s x0_hat, sigma_s^2 I) instead.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
from torch import Tensor

from components.denoisers.base import DenoiseFn
from components.noise.base import NoiseProcess
from components.random import RandomSource
from components.solvers.base import SolverTraits, StepSolver, fresh_noise, model_t, row_alpha_sigma
from components.spec import Spec
from components.util import bcast, per_time


class EulerMaruyamaSpec(SolverTraits, Spec):
    kind: Literal["euler_maruyama"] = "euler_maruyama"
    deterministic: ClassVar[bool] = False

    def build(self) -> EulerMaruyama:
        return EulerMaruyama()


class EulerMaruyama(StepSolver):
    def step(
        self, denoise: DenoiseFn, process: NoiseProcess, x: Tensor, t: Tensor, s: Tensor, rng: RandomSource
    ) -> Tensor:
        (a_t, s_t), (a_s, s_s) = row_alpha_sigma(process, t), row_alpha_sigma(process, s)
        pred = denoise(x, model_t(t, x))
        clean = s_s == 0  # the final denoising step returns x0_hat
        if bool(clean.all()):
            return pred.x0
        z = fresh_noise(x, rng)
        prior = a_t == 0  # rectified prior: sample the posterior N(alpha_s x0_hat, sigma_s^2 I)
        da, ds = per_time(process.derivatives, t.double())
        a_safe = torch.where(prior, torch.ones_like(a_t), a_t)
        f = da / a_safe
        g2 = (2 * s_t * ds - 2 * f * s_t**2).clamp_min(0)
        h = t.double() - s.double()
        sde = x - bcast(h, x) * (bcast(f, x) * x + bcast(g2 / s_t, x) * pred.eps) + bcast((g2 * h).sqrt(), x) * z
        post = bcast(a_s, x) * pred.x0 + bcast(s_s, x) * z
        out = torch.where(bcast(prior, x).bool(), post, sde)
        return torch.where(bcast(clean, x).bool(), pred.x0, out)
