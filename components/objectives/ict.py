"""Improved consistency training (Song & Dhariwal 2023, "Improved Techniques for Training
Consistency Models"), no teacher and no EMA target (mu = 0: the target is the student itself
under stop-gradient, same network, same mode, so no dropout mismatch):

    N(k) = min(s0 2^floor(k / K'), s1) + 1,  K' = floor(K / (log2 floor(s1 / s0) + 1))   (sec. 3.4)
    sigma_1 < ... < sigma_N   Karras levels (rho = 7)
    p(i) ∝ erf((ln sigma_{i+1} - P_mean) / (sqrt2 P_std)) - erf((ln sigma_i - P_mean) / (sqrt2 P_std))  (sec. 3.5)
    L = lambda(sigma_i) d(f(x0 + sigma_{i+1} z, sigma_{i+1}), sg f(x0 + sigma_i z, sigma_i)),
    lambda(sigma_i) = 1 / (sigma_{i+1} - sigma_i)                                         (sec. 3.5)
    d = pseudo-Huber, c = 0.00054 sqrt(dim)                                                (sec. 3.3)
        (``distance`` may also be l2, l1 or LPIPS, as in CM, for comparison)

on any process (levels in EDM's sigma laid on it; x_t = alpha x0 + sigma z). K is the run's
total steps, handed over by the training loop through ``attach``. The objective has no state.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, Literal

import torch
from pydantic import Field
from torch import Tensor

from components.denoisers.base import Denoiser
from components.objectives.base import Objective
from components.objectives.consistency_common import DistanceSpec, build_distance, karras_levels
from components.random import RandomSource
from components.spec import Spec


class IctSpec(Spec):
    kind: Literal["ict"] = "ict"
    s0: int = Field(10, ge=1, description="initial discretization steps")
    s1: int = Field(1280, ge=1, description="final discretization steps")
    p_mean: float = -1.1
    p_std: float = Field(2.0, gt=0)
    rho: float = Field(7.0, gt=0)
    huber_c: float | None = Field(None, gt=0, description="pseudo-Huber c; None: 0.00054 sqrt(d)")
    distance: DistanceSpec = Field("pseudo_huber", description="d: iCT's pseudo_huber, or l2, l1, {kind: lpips, ...}")
    distills_into: ClassVar[str] = "consistency"  # the student is a consistency model (zoo.distill reads this)

    def build(self) -> Ict:
        return Ict(self)


class Ict(Objective):
    def __init__(self, spec: IctSpec):
        super().__init__()
        self.spec = spec
        self.total_steps: int | None = None
        self._d = [build_distance(spec.distance, spec.huber_c)]  # LPIPS is a fixed metric: not state

    def attach(self, student: Denoiser, teacher: Denoiser | None = None, total_steps: int | None = None) -> None:
        if teacher is not None:
            raise ValueError("ict trains without a teacher: drop objective.teacher (use cd to distill one)")
        self.total_steps = total_steps

    def levels_at(self, k: int) -> int:
        """N(k), the doubling curriculum."""
        if self.total_steps is None:
            raise RuntimeError("ict: the total step count is unknown (the training loop calls objective.attach)")
        s0, s1 = self.spec.s0, self.spec.s1
        k_prime = math.floor(self.total_steps / (math.log2(math.floor(s1 / s0)) + 1))
        return min(s0 * 2 ** math.floor(k / max(k_prime, 1)), s1) + 1

    def level_probs(self, sigmas: Tensor) -> Tensor:
        """p(i) over i = 1..N-1: the lognormal's mass between sigma_i and sigma_{i+1}."""
        z = (sigmas.log() - self.spec.p_mean) / (math.sqrt(2) * self.spec.p_std)
        p = torch.erf(z[1:]) - torch.erf(z[:-1])
        return p / p.sum()

    def loss(
        self, denoiser: Denoiser, batch: dict[str, Any], rng: RandomSource, step: int
    ) -> tuple[Tensor, dict[str, Tensor]]:
        x0, cond = batch["x0"], batch.get("cond")
        process = denoiser.process
        sigmas = karras_levels(process, self.levels_at(step), self.spec.rho)
        cdf = self.level_probs(sigmas).cumsum(0)
        i = torch.searchsorted(cdf, rng.rand(dtype=torch.float64).contiguous()).clamp(max=len(cdf) - 1)
        t_i = process.t_from_ve_sigma(sigmas[i]).to(x0.device)
        t_i1 = process.t_from_ve_sigma(sigmas[i + 1]).to(x0.device)
        z = rng.randn(*x0.shape[1:]).to(x0)
        with torch.no_grad():
            target = denoiser(process.add_noise(x0, z, t_i.to(x0.dtype)), t_i.float(), cond).x0
        online = denoiser(process.add_noise(x0, z, t_i1.to(x0.dtype)), t_i1.float(), cond).x0
        w = (1 / (sigmas[i + 1] - sigmas[i])).float().to(x0.device)
        d = self._d[0](online, target)
        return (w * d).mean(), {"distance": d.mean().detach()}
