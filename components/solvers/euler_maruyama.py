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

import math
from typing import Literal

from torch import Tensor

from components.denoisers.base import DenoiseFn
from components.noise.base import NoiseProcess
from components.random import RandomSource
from components.solvers.base import at, alpha_sigma, derivative_at
from components.spec import Spec


class EulerMaruyamaSpec(Spec):
    kind: Literal["euler_maruyama"] = "euler_maruyama"

    def build(self) -> EulerMaruyama:
        return EulerMaruyama()


class EulerMaruyama:
    def __call__(self, denoise: DenoiseFn, process: NoiseProcess, x: Tensor, ts: Tensor, rng: RandomSource) -> Tensor:
        for t, s in zip(ts[:-1], ts[1:]):
            (a_t, s_t), (a_s, s_s) = alpha_sigma(process, t), alpha_sigma(process, s)
            pred = denoise(x, at(t, x))
            if s_s == 0:
                x = pred.x0
                continue
            z = rng.randn(*x.shape[1:]).to(x)
            if a_t == 0:
                x = a_s * pred.x0 + s_s * z
                continue
            da, ds = (float(d) for d in derivative_at(process, t))
            f = da / a_t
            g2 = max(2 * s_t * ds - 2 * f * s_t**2, 0.0)
            h = float(t - s)
            x = x - h * (f * x + (g2 / s_t) * pred.eps) + math.sqrt(g2 * h) * z
        return x
