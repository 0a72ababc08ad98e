"""k-step distillation of a rectified flow (Liu et al. 2022, section 2.3 "distillation"; their
reflow_t_schedule = k): on pairs (x0, eps) of a trained (usually reflowed) flow, regress the
velocity only at the k times the k-step Euler sampler evaluates, t in {1, (k-1)/k, ..., 1/k}
(the process's uniform grid), so that k Euler steps map eps to x0:

    L = E_{i, (x0, eps)} || v_hat(x_{t_i}, t_i) - (alpha'(t_i) x0 + sigma'(t_i) eps) ||^2.

k = 1 trains the one-step map x0 = eps - v(eps, 1). Pairs come from `zoo reflow --distill k`.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field
from torch import Tensor

from components.denoisers.base import Denoiser
from components.grids.uniform import Uniform
from components.objectives.base import Objective
from components.objectives.rectified_flow import paired_noise, velocity_loss
from components.random import RandomSource
from components.spec import Spec


class RfDistillSpec(Spec):
    kind: Literal["rf_distill"] = "rf_distill"
    steps: int = Field(1, ge=1, description="k: the Euler steps the distilled flow is sampled with")
    pairs_from: str | None = Field(None, description="catalog entry whose trained flow makes the pairs (for messages)")

    @property
    def needs_data(self) -> str:
        source = self.pairs_from or "the flow to distill"
        return (
            f"pairs (columns latent, noise) from {source}: run `zoo reflow <run or checkpoint> --distill {self.steps}`, "
            "or pass data='<pairs>.safetensors'"
        )

    def build(self) -> RfDistill:
        return RfDistill(self)


class RfDistill(Objective):
    def __init__(self, spec: RfDistillSpec):
        super().__init__()
        self.spec = spec

    def loss(
        self, denoiser: Denoiser, batch: dict[str, Any], rng: RandomSource, step: int
    ) -> tuple[Tensor, dict[str, Tensor]]:
        x0 = batch["x0"]
        times = Uniform()(denoiser.process, self.spec.steps)[:-1].float().to(x0.device)
        t = times[rng.randint(0, self.spec.steps).to(x0.device)]
        eps = paired_noise(batch, f"rf_distill (steps: {self.spec.steps})")
        mse = velocity_loss(denoiser, x0, eps, t, batch.get("cond"))
        return mse.mean(), {"mse": mse.mean().detach()}
