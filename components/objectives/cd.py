"""Consistency distillation (Song et al. 2023, "Consistency Models", Algorithm 2):

    n ~ U[1, N-1],  x_{t_{n+1}} = x + t_{n+1} z
    x^_{t_n} = Phi-step of the frozen teacher from t_{n+1} to t_n          (eq. 6)
    L = lambda(t_n) d(f_theta(x_{t_{n+1}}, t_{n+1}), f_theta^-(x^_{t_n}, t_n))
    theta^- <- stopgrad(mu theta^- + (1 - mu) theta)

on any process (levels t_n are N Karras levels of EDM's sigma laid on the process; the noisy
sample is x_t = alpha x0 + sigma z). Phi is any solver with a deterministic one-step form
(``teacher_solver``: heun as CM's best, euler, ddim). The teacher, a frozen trained Model, is
resolved by the training loop and handed over with ``attach``; the target network theta^- is this
objective's state (in its state_dict, so in every checkpoint). ``weighting`` is lambda: ``uniform``
(lambda = 1, CM's choice) or ``inverse_gap`` (lambda(t_n) = 1 / (sigma_{n+1} - sigma_n), iCT
section 3.5, which weights the small low-noise gaps up).
``init_from_teacher`` starts the student (and so theta^-) from the teacher's weights, as CM's
experiments do (its appendix C: the consistency model is initialised with the teacher EDM); the
architectures must match.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
from pydantic import Field
from torch import Tensor

from components.denoisers.base import Denoiser, bind
from components.objectives.base import Objective
from components.objectives.consistency_common import (
    DistanceSpec,
    TargetNetwork,
    build_distance,
    karras_levels,
    load_teacher_weights,
)
from components.objectives.teacher_fields import TeacherRef, TeacherSolver, TeacherWeights
from components.random import RandomSource
from components.solvers import SOLVERS
from components.spec import Spec


class CdSpec(Spec):
    kind: Literal["cd"] = "cd"
    teacher: TeacherRef = None
    teacher_weights: TeacherWeights = None
    teacher_solver: TeacherSolver = Field("heun", description="Phi: a solver kind with a deterministic one-step form")
    levels: int = Field(18, ge=2, description="N, the Karras levels (CM: 18 on CIFAR-10)")
    rho: float = Field(7.0, gt=0)
    mu: float = Field(0.95, ge=0, lt=1, description="EMA rate of the target network (CM: 0.95 on CIFAR-10)")
    distance: DistanceSpec = Field("l2", description="d: l2, l1, pseudo_huber, or {kind: lpips, ...} (CM: LPIPS)")
    huber_c: float | None = Field(None, gt=0, description="pseudo-Huber c; None: 0.00054 sqrt(d)")
    weighting: Literal["uniform", "inverse_gap"] = Field(
        "uniform", description="lambda(t_n): 1 (CM) or 1 / (sigma_{n+1} - sigma_n) (iCT section 3.5)")
    init_from_teacher: bool = Field(False, description="start the student from the teacher's weights (CM appendix C)")
    distills_into: ClassVar[str] = "consistency"  # the student is a consistency model (zoo.distill reads this)

    def build(self) -> Cd:
        return Cd(self)


class Cd(Objective):
    def __init__(self, spec: CdSpec):
        super().__init__()
        self.spec = spec
        self.target = TargetNetwork()
        self.phi = SOLVERS.parse(spec.teacher_solver).build()
        self._d = [build_distance(spec.distance, spec.huber_c)]  # LPIPS is a fixed metric: not state
        self._teacher: list[Denoiser] = []  # not a submodule: never in the objective's state
        self.total_steps: int | None = None

    def attach(self, student: Denoiser, teacher: Denoiser | None = None, total_steps: int | None = None) -> None:
        """The loop's hook: the student (to copy theta^- from), the frozen teacher, the run length."""
        if teacher is None:
            raise ValueError("cd needs a teacher: set objective.teacher to a run, checkpoint or catalog name")
        self._teacher = [teacher.requires_grad_(False).eval()]
        if self.spec.init_from_teacher:  # before theta^- is copied, so the target starts there too
            load_teacher_weights(student, teacher, "cd")
        self.target.attach(student)
        self.total_steps = total_steps

    def loss(
        self, denoiser: Denoiser, batch: dict[str, Any], rng: RandomSource, step: int
    ) -> tuple[Tensor, dict[str, Tensor]]:
        if not self._teacher:
            raise RuntimeError("cd: no teacher attached (the training loop calls objective.attach)")
        x0, cond = batch["x0"], batch.get("cond")
        process = self._teacher[0].process
        levels = karras_levels(process, self.spec.levels, self.spec.rho)
        n = rng.randint(0, self.spec.levels - 1).to(levels.device)  # index of t_n; t_{n+1} = n + 1
        t_n = process.t_from_ve_sigma(levels[n]).to(x0.device)
        t_n1 = process.t_from_ve_sigma(levels[n + 1]).to(x0.device)
        z = rng.randn(*x0.shape[1:]).to(x0)
        x_n1 = process.add_noise(x0, z, t_n1.to(x0.dtype))
        with torch.no_grad():
            x_hat = self.phi.step(bind(self._teacher[0], cond), process, x_n1, t_n1, t_n, rng)
            target = self.target(x_hat, t_n.float(), cond).x0
        online = denoiser(x_n1, t_n1.float(), cond).x0
        d = self._d[0](online, target)
        if self.spec.weighting == "uniform":
            return d.mean(), {"distance": d.mean().detach()}
        w = (1 / (levels[n + 1] - levels[n])).float().to(d.device)
        return (w * d).mean(), {"distance": d.mean().detach()}

    def after_step(self, denoiser: Denoiser, step: int) -> None:
        self.target.update(denoiser, self.spec.mu)
