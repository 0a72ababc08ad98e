"""Progressive distillation, one round (Salimans & Ho 2022, Algorithm 2): the student, started
from the teacher, learns to take in one DDIM step what the teacher takes in two.

On the teacher's grid of 2N steps (``grid``), for a student step t -> t'' (t' between):

    z_t = alpha_t x + sigma_t eps
    z_t'  = DDIM_teacher(z_t; t -> t'),   z_t'' = DDIM_teacher(z_t'; t' -> t'')
    x~ = (z_t'' - (sigma_t'' / sigma_t) z_t) / (alpha_t'' - (sigma_t'' / sigma_t) alpha_t)
    L = w(lambda_t) || x~ - x_hat_student(z_t) ||^2

x~ is the x-prediction for which one DDIM step of the student from z_t lands exactly on the
teacher's z_t''. ``steps`` is N, the student's step count after this round (the teacher's 2N).

The grid. The student learns its steps only at the times it is trained on, so the run's
``model.sampling`` must sample on this grid with N steps, and the grid's N times must be every
other of its 2N times (both checked by :meth:`PdSpec.check_sampling`). The trailing grid nests
(Lin et al. 2024; 1, .75, .5, .25 in 4 steps); diffusers' "linspace" uniform grid does not (1,
.667, .334, .001 in 4; 1, .857, .715, ... in 8).

The weighting w (section 4). The paper's "truncated SNR" max(SNR, 1) (the larger of the x- and
eps-space errors) is for students predicting x or v. A student that predicts eps, as every
DDPM-style teacher here does, makes its x-prediction (z - sigma eps_hat) / alpha: its x-error is
its eps-error times sigma / alpha (about 150 at t = 1 of the linear VP schedule), so the noisiest
rows take the whole gradient. ``snr`` weights the x-error by SNR, which is the eps-space MSE
(measured on ddpm-digits, 16 -> 8 steps, 200 updates: digits-FID 43.1 with ``snr``, 63.5 with
``truncated_snr``). ``snr_plus_one`` is the v-space MSE.

The loop attaches the frozen teacher; ``attach`` also starts the student from the teacher's
weights (a resume then restores the student's own). Chaining rounds (N, N/2, ...) is one run per
round; ``zoo.distill(teacher, into="pd", rounds=R)`` chains them (jobs/distill.py).
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
from pydantic import Field
from torch import Tensor

from components.denoisers.base import Denoiser, bind
from components.grids import GridSpec, TrailingSpec
from components.noise.base import NoiseProcess
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
    grid: GridSpec = Field(
        TrailingSpec(), description="the teacher's 2N-step grid; the student samples on its N-step grid")
    weighting: Literal["truncated_snr", "snr", "snr_plus_one"] = Field(
        "truncated_snr", description="w(lambda_t) of the x-space loss (section 4): max(SNR, 1) for x or v students, "
                                     "SNR (the eps-space MSE) for eps students, SNR + 1 (the v-space MSE)")
    distills_into: ClassVar[str] = "teacher"  # the student keeps the teacher's parameterization (zoo.distill)
    # the weighting zoo.distill gives a derived student, by parameterization (others: the paper's default)
    student_weighting: ClassVar[dict[str, str]] = {"eps": "snr"}

    def build(self) -> Pd:
        return Pd(self)

    def check_sampling(self, process: NoiseProcess, sampling: Any) -> None:
        """ValueError unless the student samples on what it learns: ``sampling.grid`` is this
        grid with N = ``steps`` steps, and the N-step grid is every other time of the 2N-step one."""
        if sampling.grid != self.grid or sampling.steps != self.steps:
            raise ValueError(
                f"pd distils {self.steps} steps on the {self.grid.kind} grid (objective.steps, objective.grid) but "
                f"model.sampling samples {sampling.steps} steps on the {sampling.grid.kind} grid: set them equal")
        grid = self.grid.build()
        student, teacher = grid(process, self.steps), grid(process, 2 * self.steps)
        if not torch.allclose(student, teacher[::2], rtol=0, atol=1e-9):
            raise ValueError(
                f"objective.grid: the {self.grid.kind} grid does not nest: its {self.steps}-step times "
                f"{[round(float(t), 4) for t in student]} are not every other time of its {2 * self.steps}-step "
                f"times {[round(float(t), 4) for t in teacher]}; use the trailing grid")


def pd_target(z_t: Tensor, z_t2: Tensor, a_t: Tensor, s_t: Tensor, a_t2: Tensor, s_t2: Tensor) -> Tensor:
    """x~ of Algorithm 2 (per row; float64 coefficients)."""
    r = s_t2 / s_t
    return (z_t2 - bcast(r, z_t) * z_t) / bcast(a_t2 - r * a_t, z_t)


def pd_weight(a_t: Tensor, s_t: Tensor, weighting: str) -> Tensor:
    """w(lambda_t) of the x-space loss (section 4): max(SNR, 1) is max(x-, eps-space MSE), SNR the
    eps-space MSE, SNR + 1 the v-space MSE (VP)."""
    snr = a_t**2 / s_t**2
    return {"truncated_snr": snr.clamp_min(1.0), "snr": snr, "snr_plus_one": snr + 1}[weighting]


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
        grid = self.spec.grid.build()(process, 2 * self.spec.steps).double()  # teacher's 2N steps, ending at 0
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
        w = pd_weight(a_t, s_t, self.spec.weighting).float().to(mse.device)
        return (w * mse).mean(), {"mse": mse.mean().detach()}
