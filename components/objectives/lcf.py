"""Latent consistency fine-tuning (Luo et al. 2023, "Latent Consistency Models", Algorithm 4):
fine-tune a trained LCM on a dataset of its own without a teacher,

    n, w as in LCD (components/objectives/lcd.py: the skipping chain, w ~ U[w_min, w_max])
    z_{n+k} = alpha(tau_n) z + sigma(tau_n) eps,   z^_n = alpha(tau_n - k) z + sigma(tau_n - k) eps   (same eps)
    L = d(f_theta(z_{n+k}, w, c, tau_n), f_theta^-(z^_n, w, c, tau_n - k))
    theta^- <- stopgrad(mu theta^- + (1 - mu) theta)

z^_n is the one-sample estimate of the ODE step that replaces the teacher (consistency training,
CM Algorithm 3, on the latent chain). The LCM to fine-tune comes in as the model's ``weights``
(the loop loads them before the first step); the target theta^- starts from it and is this
objective's state, in every checkpoint.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import Tensor

from components.denoisers.base import Denoiser
from components.objectives.base import Objective
from components.objectives.consistency_common import TargetNetwork, distance
from components.objectives.lcd import LcmTrainSpec, draw_w, skipping_levels, with_w
from components.random import RandomSource


class LcfSpec(LcmTrainSpec):
    kind: Literal["lcf"] = "lcf"

    def build(self) -> Lcf:
        return Lcf(self)


class Lcf(Objective):
    def __init__(self, spec: LcfSpec):
        super().__init__()
        self.spec = spec
        self.target = TargetNetwork()

    def attach(self, student: Denoiser, teacher: Denoiser | None = None, total_steps: int | None = None) -> None:
        if teacher is not None:
            raise ValueError("lcf fine-tunes without a teacher; use lcd to distill from one")
        self.target.attach(student)

    def loss(
        self, denoiser: Denoiser, batch: dict[str, Any], rng: RandomSource, step: int
    ) -> tuple[Tensor, dict[str, Tensor]]:
        x0, cond = batch["x0"], batch.get("cond")
        process = denoiser.process
        t_start, t_end = skipping_levels(process, rng, self.spec.skip, x0.device)
        w = draw_w(self.spec, rng, x0.device)
        z = rng.randn(*x0.shape[1:]).to(x0)
        with torch.no_grad():
            target = self.target(process.add_noise(x0, z, t_end.to(x0.dtype)), t_end.float(), with_w(cond, w)).x0
        online = denoiser(process.add_noise(x0, z, t_start.to(x0.dtype)), t_start.float(), with_w(cond, w)).x0
        d = distance(online, target, self.spec.distance, self.spec.huber_c)
        return d.mean(), {"distance": d.mean().detach()}

    def after_step(self, denoiser: Denoiser, step: int) -> None:
        self.target.update(denoiser, self.spec.mu)
