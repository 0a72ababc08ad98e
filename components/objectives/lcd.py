"""Latent consistency distillation (Luo et al. 2023, "Latent Consistency Models", Algorithm 1;
diffusers' examples/consistency_distillation/train_lcm_distill_sd_wds.py):

    n ~ U{0, ..., N-1} over the skipping chain tau_i = (i + 1) k - 1 (N = T / k; k = 20: 19, ..., 999)
    w ~ U[w_min, w_max]
    z_{n+k} = alpha(tau_n) z + sigma(tau_n) eps,          z from `zoo data encode` (latents)
    z^_n = z_{n+k} + (1 + w) Psi(z_{n+k}, tau_n, tau_n - k, c) - w Psi(z_{n+k}, tau_n, tau_n - k, null)   (eq. 10)
    L = d(f_theta(z_{n+k}, w, c, tau_n), f_theta^-(z^_n, w, c, tau_n - k))
    theta^- <- stopgrad(mu theta^- + (1 - mu) theta)

Psi(z, t, s, c) = Phi-step(z; t -> s, c) - z, the increment of any solver with a deterministic
one-step form (DDIM as the paper; Euler, Heun): the teacher's cond and null calls run as one
batch. tau_n - k below 0 is timestep 0 (the chain's first level, as the diffusers script). w is
classifier-free guidance of the *teacher* and an *input* of the student and target
(cond["w"]: a backbone with ``time_cond_proj_dim``). The student starts from the teacher's
weights (its w-embedding stays as built), the target theta^- (consistency_common.TargetNetwork,
shared with CD) from the student; theta^- is this objective's state, in every checkpoint. The
null condition comes from the student's conditioner (the teacher and student share their frozen
text encoder, as in LCM), given by the loop through ``attach_conditioner``.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
from pydantic import Field, model_validator
from torch import Tensor

from components.denoisers.base import Denoiser, bind
from components.noise.base import NoiseProcess
from components.objectives.base import Objective
from components.objectives.consistency_common import TargetNetwork, distance
from components.objectives.teacher_fields import TeacherRef, TeacherSolver, TeacherWeights
from components.random import RandomSource
from components.solvers import SOLVERS
from components.spec import Spec


class LcmTrainSpec(Spec):
    """What LCD and LCF share: the skipping chain, the w range, the EMA rate and the distance."""

    skip: int = Field(20, ge=1, description="k, the skipping interval over the teacher's chain (LCM: 20, N = 1000 / k)")
    w_min: float = Field(3.0, ge=0, description="guidance scale range of w ~ U[w_min, w_max] (our w = diffusers' guidance_scale - 1)")
    w_max: float = Field(15.0, ge=0)
    mu: float = Field(0.95, ge=0, lt=1, description="EMA rate of the target network (diffusers' LCD: 0.95)")
    distance: Literal["l2", "l1", "pseudo_huber"] = "l2"
    huber_c: float | None = Field(None, gt=0, description="pseudo-Huber c; None: 0.00054 sqrt(d)")

    @model_validator(mode="after")
    def _w_range(self):
        if self.w_max < self.w_min:
            raise ValueError(f"w_max={self.w_max} is below w_min={self.w_min}")
        return self


class LcdSpec(LcmTrainSpec):
    distills_into: ClassVar[str] = "lcm"  # the student is a latent consistency model (zoo.distill reads this)
    kind: Literal["lcd"] = "lcd"
    teacher: TeacherRef = None
    teacher_weights: TeacherWeights = None
    teacher_solver: TeacherSolver = Field("ddim", description="Psi: a solver kind with a deterministic one-step form")
    init_from_teacher: bool = Field(True, description="the student starts from the teacher's weights")

    def build(self) -> Lcd:
        return Lcd(self)


def skipping_levels(process: NoiseProcess, rng: RandomSource, skip: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """(t_{n+k}, t_n) per row in process time: tau_n = (i + 1) k - 1 with i ~ U{0..N-1} and
    tau_n - k clamped at timestep 0; discrete timestep m is t = (m + 1) / T."""
    T = getattr(process, "timesteps", None)
    if T is None:
        raise ValueError(f"LCM's skipping schedule needs a discrete chain (timesteps set); {process!r} is continuous")
    if T % skip:
        raise ValueError(f"skip={skip} does not divide the chain's {T} timesteps")
    i = rng.randint(0, T // skip).to(device)
    start = (i + 1) * skip - 1
    end = (start - skip).clamp_min(0)
    return (start.double() + 1) / T, (end.double() + 1) / T


def with_w(cond: dict[str, Tensor] | None, w: Tensor) -> dict[str, Tensor]:
    return {**(cond or {}), "w": w}


def draw_w(spec: LcmTrainSpec, rng: RandomSource, device: torch.device) -> Tensor:
    return (spec.w_min + (spec.w_max - spec.w_min) * rng.rand()).to(device=device, dtype=torch.float32)


class Lcd(Objective):
    def __init__(self, spec: LcdSpec):
        super().__init__()
        self.spec = spec
        self.target = TargetNetwork()
        self.psi = SOLVERS.parse(spec.teacher_solver).build()
        self._teacher: list[Denoiser] = []  # not submodules: never in the objective's state
        self._conditioner: list[Any] = []
        self.total_steps: int | None = None

    def attach(self, student: Denoiser, teacher: Denoiser | None = None, total_steps: int | None = None) -> None:
        """The loop's hook: the student (started from the teacher, theta^- copied from it), the frozen teacher."""
        if teacher is None:
            raise ValueError("lcd needs a teacher: set objective.teacher (or zoo.train(..., teacher_weights=...)) "
                             "to a run, checkpoint, catalog name or diffusers folder")
        mine, theirs = getattr(student.process, "spec", None), getattr(teacher.process, "spec", None)
        if mine != theirs:
            raise ValueError(f"lcd: the student's process {student.process!r} is not the teacher's {teacher.process!r}; "
                             "distill on the teacher's chain (set the model's process to the teacher's)")
        self._teacher = [teacher.requires_grad_(False).eval()]
        if self.spec.init_from_teacher:
            inner = getattr(student, "module", student)
            missing, unexpected = inner.load_state_dict(teacher.state_dict(), strict=False)
            if unexpected:
                raise ValueError(f"lcd: the teacher's weights {unexpected[:4]} have no place in the student: "
                                 "student and teacher need the same backbone (plus the student's w-embedding)")
            self.new_in_student = list(missing)  # the w-embedding (time_cond_proj_dim)
        self.target.attach(student)
        self.total_steps = total_steps

    def attach_conditioner(self, conditioner: Any) -> None:
        """The loop's hook: the conditioner whose null condition the teacher's guidance uses."""
        if not getattr(conditioner, "guidable", False):
            raise ValueError("lcd guides the teacher with w and needs a conditioner with a null condition "
                             "(clip_text or class_label); this model is unconditional")
        self._conditioner = [conditioner]

    def loss(
        self, denoiser: Denoiser, batch: dict[str, Any], rng: RandomSource, step: int
    ) -> tuple[Tensor, dict[str, Tensor]]:
        if not self._teacher or not self._conditioner:
            raise RuntimeError("lcd: no teacher or conditioner attached (the training loop calls objective.attach)")
        x0, cond = batch["x0"], batch.get("cond")
        if cond is None:
            raise ValueError("lcd needs a condition in the batch (captions or labels)")
        teacher, process = self._teacher[0], self._teacher[0].process
        t_start, t_end = skipping_levels(process, rng, self.spec.skip, x0.device)
        w = draw_w(self.spec, rng, x0.device)
        z = rng.randn(*x0.shape[1:]).to(x0)
        x_start = process.add_noise(x0, z, t_start.to(x0.dtype))
        with torch.no_grad():
            null = {k: v.to(x0.device) for k, v in self._conditioner[0].null(x0.shape[0]).items()}
            both = {k: torch.cat([cond[k], null[k]]) for k in cond}
            x2 = torch.cat([x_start, x_start])
            stepped = self.psi.step(bind(teacher, both), process, x2, torch.cat([t_start, t_start]),
                                    torch.cat([t_end, t_end]), rng)
            psi_c, psi_null = (stepped - x2).chunk(2)
            wb = w.reshape(-1, *[1] * (x0.dim() - 1)).to(x0)
            x_hat = x_start + (1 + wb) * psi_c - wb * psi_null  # LCM eq. 10 / Algorithm 1
            target = self.target(x_hat, t_end.float(), with_w(cond, w)).x0
        online = denoiser(x_start, t_start.float(), with_w(cond, w)).x0
        d = distance(online, target, self.spec.distance, self.spec.huber_c)
        return d.mean(), {"distance": d.mean().detach(), "w": w.mean()}

    def after_step(self, denoiser: Denoiser, step: int) -> None:
        self.target.update(denoiser, self.spec.mu)
