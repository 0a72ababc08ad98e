"""Consistency training (Song et al. 2023, "Consistency Models", Algorithm 3): no teacher; the
ODE step of CD is replaced by the unbiased estimate x_{t_n} = x + t_n z with the same z:

    N = N(k),  sigma_1 < ... < sigma_N   Karras levels (rho = 7)
    n ~ U[1, N - 1],  z ~ N(0, I)
    L = lambda(t_n) d(f_theta(x + t_{n+1} z, t_{n+1}), f_theta^-(x + t_n z, t_n))          (eq. 10)
    theta^- <- stopgrad(mu(k) theta^- + (1 - mu(k)) theta)

with CM appendix C's schedules over the run's K total steps (s0, s1, mu0; CIFAR-10: 2, 150, 0.9):

    N(k)  = ceil(sqrt(k / K ((s1 + 1)^2 - s0^2) + s0^2) - 1) + 1
    mu(k) = exp(s0 log mu0 / N(k))

(openai's consistency_models code divides by N(k) - 1 instead: its ``scales`` before the +1.)
On any process: levels in EDM's sigma laid on it, x_t = alpha x0 + sigma z. lambda = 1 (CM's
choice); the student and the target draw the same dropout masks (as openai's code does). The
target network theta^- is the objective's state, so in every checkpoint. K is handed over by
the training loop through ``attach``.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, Literal

import torch
from pydantic import Field, model_validator
from torch import Tensor

from components.denoisers.base import Denoiser
from components.objectives.base import Objective
from components.objectives.consistency_common import (
    DistanceSpec,
    TargetNetwork,
    build_distance,
    karras_levels,
    same_dropout,
)
from components.random import RandomSource
from components.spec import Spec


class CtSpec(Spec):
    kind: Literal["ct"] = "ct"
    s0: int = Field(2, ge=2, description="initial discretization steps N(0) (CM: 2)")
    s1: int = Field(150, ge=2, description="final discretization steps N(K) - 1 (CM CIFAR-10: 150)")
    mu0: float = Field(0.9, ge=0, lt=1, description="EMA rate of the target network at k = 0 (CM CIFAR-10: 0.9)")
    rho: float = Field(7.0, gt=0)
    distance: DistanceSpec = Field("l2", description="d: l2, l1, pseudo_huber, or {kind: lpips, ...} (CM: LPIPS)")
    huber_c: float | None = Field(None, gt=0, description="pseudo-Huber c; None: 0.00054 sqrt(d)")
    distills_into: ClassVar[str] = "consistency"  # the student is a consistency model (zoo.distill reads this)

    @model_validator(mode="after")
    def _order(self) -> CtSpec:
        if self.s1 < self.s0:
            raise ValueError(f"s1 ({self.s1}) must be >= s0 ({self.s0})")
        return self

    def build(self) -> Ct:
        return Ct(self)


class Ct(Objective):
    def __init__(self, spec: CtSpec):
        super().__init__()
        self.spec = spec
        self.target = TargetNetwork()
        self._d = [build_distance(spec.distance, spec.huber_c)]  # LPIPS is a fixed metric: not state
        self.total_steps: int | None = None

    def attach(self, student: Denoiser, teacher: Denoiser | None = None, total_steps: int | None = None) -> None:
        """The loop's hook: the student (to copy theta^- from) and the run length K."""
        if teacher is not None:
            raise ValueError("ct trains without a teacher: drop objective.teacher (use cd to distill one)")
        self.target.attach(student)
        self.total_steps = total_steps

    def levels_at(self, k: int) -> int:
        """N(k)."""
        if not self.total_steps:
            raise RuntimeError("ct: the total step count is unknown (the training loop calls objective.attach)")
        s0, s1 = self.spec.s0, self.spec.s1
        return math.ceil(math.sqrt(k / self.total_steps * ((s1 + 1) ** 2 - s0**2) + s0**2) - 1) + 1

    def mu_at(self, k: int) -> float:
        """mu(k), the target's EMA rate at step k."""
        return math.exp(self.spec.s0 * math.log(self.spec.mu0) / self.levels_at(k)) if self.spec.mu0 > 0 else 0.0

    def loss(
        self, denoiser: Denoiser, batch: dict[str, Any], rng: RandomSource, step: int
    ) -> tuple[Tensor, dict[str, Tensor]]:
        x0, cond = batch["x0"], batch.get("cond")
        process = denoiser.process
        n_levels = self.levels_at(step)
        levels = karras_levels(process, n_levels, self.spec.rho)
        n = rng.randint(0, n_levels - 1).to(levels.device)  # index of t_n; t_{n+1} = n + 1
        t_n = process.t_from_ve_sigma(levels[n]).to(x0.device)
        t_n1 = process.t_from_ve_sigma(levels[n + 1]).to(x0.device)
        z = rng.randn(*x0.shape[1:]).to(x0)
        with same_dropout(x0.device):
            online = denoiser(process.add_noise(x0, z, t_n1.to(x0.dtype)), t_n1.float(), cond).x0
        with torch.no_grad():
            target = self.target(process.add_noise(x0, z, t_n.to(x0.dtype)), t_n.float(), cond).x0
        d = self._d[0](online, target)
        return d.mean(), {"distance": d.mean().detach(), "levels": torch.tensor(float(n_levels))}

    def after_step(self, denoiser: Denoiser, step: int) -> None:
        self.target.update(denoiser, self.mu_at(step))
