"""The solver contract: a stateless function

    (denoise, process, x_T, time grid, rng) -> x_0

``denoise`` is a DenoiseFn with condition, guidance and clipping already bound in
(components.denoisers.bind), ``ts`` is the grid of decreasing times ending at 0, ``rng`` the
RandomSource of the samples (per-request seeds). Solvers keep no state between calls.
"""

from __future__ import annotations

import math
from typing import ClassVar, Protocol

import torch
from pydantic import Field
from torch import Tensor

from components.denoisers.base import DenoiseFn
from components.noise.base import NoiseProcess
from components.random import RandomSource
from components.spec import Spec
from components.util import per_time


class Solver(Protocol):
    def __call__(
        self, denoise: DenoiseFn, process: NoiseProcess, x: Tensor, ts: Tensor, rng: RandomSource
    ) -> Tensor: ...


class SolverTraits:
    """Registry traits every solver spec declares (DESIGN.md 2b): ``has_step``, whether the
    solver has the per-row one-step form ``step(denoise, process, x, t, s, rng)`` (multistep and
    adaptive solvers do not), and ``deterministic``, whether it integrates the probability-flow
    ODE without fresh noise (a property where a field decides, e.g. DDIM's eta), and ``few_step``,
    whether it is a consistency model's sampler, made for one to a handful of network calls (the
    serving page compares 1, 2 and 4 steps of such a model side by side)."""

    has_step: ClassVar[bool] = True
    deterministic: ClassVar[bool] = True
    few_step: ClassVar[bool] = False


class ChurnSpec(SolverTraits, Spec):
    """The fields of EDM's stochastic churn (Algorithm 2; ``Churn`` below), shared by the Euler
    and Heun specs: deterministic exactly when S_churn = 0."""

    s_churn: float = Field(0.0, ge=0, le=1000, description="EDM's S_churn; 0 = deterministic")
    s_tmin: float = Field(0.0, ge=0, le=1e6, description="churn only where sigma/alpha >= S_tmin")
    s_tmax: float | None = Field(None, gt=0, le=1e6, description="churn only where sigma/alpha <= S_tmax; None = no bound")
    s_noise: float = Field(1.0, gt=0, le=2.0, description="EDM's S_noise (1 to 1.007 in EDM Table 5)")

    @property
    def deterministic(self) -> bool:  # type: ignore[override]
        return self.s_churn == 0


class StepSolver:
    """A solver whose grid loop is its one-step form: for each (t_i, t_{i+1}) of the grid,
    ``before_step`` (EDM's churn, where a solver has one) then ``step`` with every row at t_i."""

    def __call__(self, denoise: DenoiseFn, process: NoiseProcess, x: Tensor, ts: Tensor, rng: RandomSource) -> Tensor:
        n = len(ts) - 1
        for t, s in zip(ts[:-1], ts[1:]):
            x, t = self.before_step(x, t, process, rng, n)
            b = x.shape[0]
            x = self.step(denoise, process, x, t.reshape(()).expand(b), s.reshape(()).expand(b), rng)
        return x

    def before_step(
        self, x: Tensor, t: Tensor, process: NoiseProcess, rng: RandomSource, n_steps: int
    ) -> tuple[Tensor, Tensor]:
        return x, t

    def step(
        self, denoise: DenoiseFn, process: NoiseProcess, x: Tensor, t: Tensor, s: Tensor, rng: RandomSource
    ) -> Tensor:
        """x_s from x_t, each row from its own t[i] to its own s[i] (t, s of shape (B,))."""
        raise NotImplementedError


def row_alpha_sigma(process: NoiseProcess, t: Tensor) -> tuple[Tensor, Tensor]:
    """(alpha(t), sigma(t)) of per-row times (B,), in float64; sigma = 0 where t = 0 (the clean
    end, as :func:`alpha_sigma`)."""
    def both(t: Tensor) -> tuple[Tensor, Tensor]:
        a, s = process.alpha(t), process.sigma(t)
        return a, torch.where(t == 0, torch.zeros_like(s), s)

    return per_time(both, t.double())


def model_t(t: Tensor, x: Tensor) -> Tensor:
    """Per-row times as the denoiser takes them (float32, or float64 with float64 samples)."""
    dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    return per_time(lambda u: u.to(device=x.device, dtype=dtype), t)  # one time for every row stays one


def fresh_noise(x: Tensor, rng: RandomSource) -> Tensor:
    return rng.randn(*x.shape[1:]).to(x)


def alpha_sigma(process: NoiseProcess, t: Tensor) -> tuple[float, float]:
    """(alpha(t), sigma(t)) of one scalar time, in float64. A grid's final t = 0 is the clean
    end: sigma = 0 there even where the process's sigma(0) is not (VE's sigma_min), which makes
    the last step land on x0_hat (Song et al.'s final denoising step)."""
    t = t.reshape(1).double()
    if float(t) == 0.0:
        return float(process.alpha(t)), 0.0
    return float(process.alpha(t)), float(process.sigma(t))


def ve_sigma(a: float, s: float) -> float:
    """EDM's sigma = sigma / alpha of one time (infinite where alpha = 0)."""
    return s / a if a > 0 else math.inf


def derivative_at(process: NoiseProcess, t: Tensor) -> tuple[Tensor, Tensor]:
    """(d alpha/dt, d sigma/dt) of one scalar time as float64 0-d tensors."""
    da, ds = process.derivatives(t.reshape(1).double())
    return da[0], ds[0]


class Churn:
    """EDM's stochastic churn (Karras et al. 2022, Algorithm 2, lines 4-6), in EDM's sigma
    s = sigma / alpha of any process: where S_tmin <= s_i <= S_tmax, raise the noise to
    s^ = (1 + gamma) s_i with gamma = min(S_churn / N, sqrt(2) - 1) by adding fresh noise of std
    S_noise sqrt(s^2 - s_i^2) to x~ = x / alpha, and continue from the time t^ of s^ (clamped to
    t_max, in which case s^ is what t_max allows). S_churn = 0 is the deterministic sampler."""

    def __init__(self, s_churn: float, s_tmin: float, s_tmax: float | None, s_noise: float):
        self.s_churn, self.s_tmin, self.s_noise = s_churn, s_tmin, s_noise
        self.s_tmax = math.inf if s_tmax is None else s_tmax

    def __call__(
        self, x: Tensor, t: Tensor, process: NoiseProcess, rng: RandomSource, n_steps: int
    ) -> tuple[Tensor, Tensor]:
        if self.s_churn == 0:
            return x, t
        a, s = alpha_sigma(process, t)
        sig = ve_sigma(a, s)
        if not (math.isfinite(sig) and self.s_tmin <= sig <= self.s_tmax):
            return x, t
        gamma = min(self.s_churn / n_steps, math.sqrt(2) - 1)
        t_hat = process.t_from_ve_sigma(torch.tensor([sig * (1 + gamma)], dtype=torch.float64))
        t_hat = t_hat.clamp(max=process.t_max).reshape(())
        a_hat, s_hat = alpha_sigma(process, t_hat)
        std = self.s_noise * math.sqrt(max(ve_sigma(a_hat, s_hat) ** 2 - sig**2, 0.0))
        x = a_hat * (x / a + std * rng.randn(*x.shape[1:]).to(x))
        return x, t_hat.to(t)


def at(t: Tensor, x: Tensor) -> Tensor:
    """A scalar grid time as the (B,) vector a denoiser takes: float32, or float64 when the
    samples are float64 (closed-form checks at tight tolerances)."""
    dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    return t.to(device=x.device, dtype=dtype).expand(x.shape[0])


def transition_var(a_t: float, s_t: float, a_s: float, s_s: float) -> float:
    """sigma_{t|s}^2 = sigma_t^2 - (alpha_t/alpha_s)^2 sigma_s^2, the variance of x_t | x_s
    (Kingma et al. 2021, eq. 4); for VP it is 1 - alphabar_t / alphabar_s."""
    return max(s_t**2 - (a_t / a_s) ** 2 * s_s**2, 0.0)
