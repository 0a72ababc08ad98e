"""Progressive distillation, one round (Salimans & Ho 2022, Algorithm 2): the student, started
from the teacher, learns to take in one DDIM step what the teacher takes in two.

On the process's uniform grid of 2N teacher steps, for a student step t -> t'' (t' between):

    z_t = alpha_t x + sigma_t eps
    z_t'  = DDIM_teacher(z_t; t -> t'),   z_t'' = DDIM_teacher(z_t'; t' -> t'')
    x~ = (z_t'' - (sigma_t'' / sigma_t) z_t) / (alpha_t'' - (sigma_t'' / sigma_t) alpha_t)
    L = w(lambda_t) || x~ - x_hat_student(z_t) ||^2,   w = max(SNR_t, 1) ("truncated SNR")

x~ is the x-prediction for which one DDIM step of the student from z_t lands exactly on the
teacher's z_t''. ``steps`` is N, the student's step count after this round (the teacher's is
2N). The loop attaches the frozen teacher; ``attach`` also starts the student from the teacher's
weights (a resume then restores the student's own). Chaining rounds (N, N/2, ...) is one run per
round; ``zoo.distill(teacher, into="pd", rounds=R)`` chains them (jobs/distill.py).
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
from pydantic import Field
from torch import Tensor

from components.denoisers.base import Denoiser, bind
from components.grids.uniform import Uniform
from components.objectives.base import Objective
from components.objectives.consistency_common import load_teacher_weights
from components.objectives.teacher_fields import TeacherRef, TeacherWeights
from components.random import RandomSource
from components.solvers.base import row_alpha_sigma
from components.solvers.ddim import Ddim
from components.spec import Spec
from components.util import bcast


class PdSpec(Spec):
    kind: Literal["pd"] = "pd"
    teacher: TeacherRef = None
    teacher_weights: TeacherWeights = None
    steps: int = Field(..., ge=1, description="N, the student's sampling steps after this round (teacher: 2N)")
    distills_into: ClassVar[str] = "teacher"  # the student keeps the teacher's parameterization (zoo.distill)

    def build(self) -> Pd:
        return Pd(self)


def pd_target(z_t: Tensor, z_t2: Tensor, a_t: Tensor, s_t: Tensor, a_t2: Tensor, s_t2: Tensor) -> Tensor:
    """x~ of Algorithm 2 (per row; float64 coefficients)."""
    r = s_t2 / s_t
    return (z_t2 - bcast(r, z_t) * z_t) / bcast(a_t2 - r * a_t, z_t)


class Pd(Objective):
    def __init__(self, spec: PdSpec):
        super().__init__()
        self.spec = spec
        self._teacher: list[Denoiser] = []

    def attach(self, student: Denoiser, teacher: Denoiser | None = None, total_steps: int | None = None) -> None:
        if teacher is None:
            raise ValueError("pd needs a teacher: set objective.teacher to a run, checkpoint or catalog name")
        self._teacher = [teacher.requires_grad_(False).eval()]
        load_teacher_weights(student, teacher, "pd")  # the student starts as the teacher

    def loss(
        self, denoiser: Denoiser, batch: dict[str, Any], rng: RandomSource, step: int
    ) -> tuple[Tensor, dict[str, Tensor]]:
        if not self._teacher:
            raise RuntimeError("pd: no teacher attached (the training loop calls objective.attach)")
        x0, cond = batch["x0"], batch.get("cond")
        process = denoiser.process
        grid = Uniform()(process, 2 * self.spec.steps).double()  # teacher's 2N steps, ending at 0
        j = rng.randint(0, self.spec.steps).to(grid.device)
        t, t1, t2 = grid[2 * j], grid[2 * j + 1], grid[2 * j + 2]
        eps = rng.randn(*x0.shape[1:]).to(x0)
        z_t = process.add_noise(x0, eps, t.to(x0.dtype))
        ddim, teach = Ddim(0.0), bind(self._teacher[0], cond)
        with torch.no_grad():
            z_t2 = ddim.step(teach, process, ddim.step(teach, process, z_t, t, t1, rng), t1, t2, rng)
        (a_t, s_t), (a_t2, s_t2) = row_alpha_sigma(process, t), row_alpha_sigma(process, t2)
        target = pd_target(z_t, z_t2, a_t, s_t, a_t2, s_t2).to(x0.dtype)
        pred = denoiser(z_t, t.float(), cond).x0
        mse = (pred.float() - target.float()).pow(2).flatten(1).mean(1)
        w = (a_t**2 / s_t**2).clamp_min(1.0).float().to(mse.device)
        return (w * mse).mean(), {"mse": mse.mean().detach()}
