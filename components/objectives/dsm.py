"""Denoising score matching in eps, x0 or v space (Ho et al. 2020; Salimans & Ho 2022).

L = E_{t, x0, eps} w(t) || target_hat(x_t, t) - target ||^2,  x_t = alpha x0 + sigma eps.
target="eps" with uniform weighting is DDPM's L_simple (Ho eq. 14). ``min_snr`` is Min-SNR-gamma
(Hang et al. 2023): the weight that makes each target's loss equal min(SNR, gamma) times the
x0-space error, i.e. min(SNR, gamma)/SNR for eps, min(SNR, gamma) for x0 and
min(SNR, gamma)/(SNR + 1) for v.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import Field
from torch import Tensor

from components.denoisers.base import Denoiser
from components.objectives.base import Objective
from components.random import RandomSource
from components.spec import Spec
from components.util import bcast


class DsmSpec(Spec):
    kind: Literal["dsm"] = "dsm"
    target: Literal["eps", "x0", "v"] = "eps"
    weighting: Literal["uniform", "min_snr"] = "uniform"
    min_snr_gamma: float = Field(5.0, gt=0)

    def build(self) -> Dsm:
        return Dsm(self)


class Dsm(Objective):
    def __init__(self, spec: DsmSpec):
        super().__init__()
        self.spec = spec

    def weight(self, log_snr: Tensor) -> Tensor:
        if self.spec.weighting == "uniform":
            return torch.ones_like(log_snr)
        snr = log_snr.exp()
        clipped = snr.clamp(max=self.spec.min_snr_gamma)
        return {"eps": clipped / snr, "x0": clipped, "v": clipped / (snr + 1)}[self.spec.target]

    def loss(
        self, denoiser: Denoiser, batch: dict[str, Any], rng: RandomSource, step: int
    ) -> tuple[Tensor, dict[str, Tensor]]:
        x0 = batch["x0"]
        process = denoiser.process
        t = process.sample_t(rng).to(x0.device)
        eps = rng.randn(*x0.shape[1:]).to(x0)
        x_t = process.add_noise(x0, eps, t)
        pred = denoiser(x_t, t, batch.get("cond"))
        a, s = bcast(process.alpha(t), x0), bcast(process.sigma(t), x0)
        target = {"eps": eps, "x0": x0, "v": a * eps - s * x0}[self.spec.target]
        guess = {"eps": pred.eps, "x0": pred.x0, "v": pred.v}[self.spec.target]
        mse = (guess.float() - target.float()).pow(2).flatten(1).mean(1)
        loss = (self.weight(process.log_snr(t).float()) * mse).mean()
        return loss, {"mse": mse.mean().detach()}
