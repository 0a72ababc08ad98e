"""Closed-form references for testing solvers and processes.

For data x0 ~ N(mu, diag(s^2)) and x_t = alpha x0 + sigma eps, the marginal is
x_t ~ N(alpha mu, diag(alpha^2 s^2 + sigma^2)) and the exact denoiser (the posterior mean) is

    E[x0 | x_t] = mu + alpha s^2 / (alpha^2 s^2 + sigma^2) * (x_t - alpha mu),

so any solver run with it must reproduce N(mu, diag(s^2)), and the probability-flow ODE has the
closed-form solution x_t = alpha_t mu + sqrt(alpha_t^2 s^2 + sigma_t^2) z for a fixed z.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from components.denoisers.base import Cond, Prediction
from components.noise.base import NoiseProcess
from components.util import bcast, one_time


class GaussianDenoiser(nn.Module):
    """The exact denoiser of N(mu, diag(s^2)) data under ``process``; a drop-in for Denoiser."""

    def __init__(self, process: NoiseProcess, mu: Tensor | float, s: Tensor | float):
        """``s`` is one std for every dimension or one per dimension (a diagonal covariance)."""
        super().__init__()
        self.process = process
        self.register_buffer("mu", torch.as_tensor(mu, dtype=torch.float64))
        self.register_buffer("s", torch.as_tensor(s, dtype=torch.float64))

    def forward(self, x: Tensor, t: Tensor, cond: Cond = None) -> Prediction:
        t = t.to(x.device).reshape(-1)
        if t.shape[0] == 1 or one_time(t):  # one time for every row (a grid's): the coefficients once
            t = t[:1]
        x64, t = x.double(), t.double()
        a, sg = bcast(self.process.alpha(t), x64), bcast(self.process.sigma(t), x64)  # (B or 1, 1, ...)
        mu, s2 = self.mu.to(x.device), self.s.to(x.device) ** 2
        var = a * a * s2 + sg * sg  # of x_t, per dimension
        d = x64 - a * mu
        x0 = mu + (a * s2 / var) * d
        eps = (sg / var) * d  # = (x_t - alpha x0) / sigma, without cancellation at sigma -> 0
        rows = (x.shape[0], *a.shape[1:])
        return Prediction(x, a.to(x.dtype).expand(rows), sg.to(x.dtype).expand(rows), x0.to(x.dtype), eps.to(x.dtype))

    def marginal_std(self, t: Tensor) -> Tensor:
        t = t.double()
        return (self.process.alpha(t) ** 2 * self.s**2 + self.process.sigma(t) ** 2).sqrt()

    def ode_solution(self, z: Tensor, t: Tensor) -> Tensor:
        """x_t on the probability-flow ODE trajectory through standardized point z."""
        t = t.double().reshape(())
        return (self.process.alpha(t) * self.mu + self.marginal_std(t) * z.double()).to(z.dtype)
