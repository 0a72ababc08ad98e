"""The consistency parameterization as the released latent consistency models use it (Luo et al.
2023, LCM, eq. 9 with the scalings of the LCM repository and diffusers' ``LCMScheduler``):

    f(x_t, t) = c_skip(t) x_t + c_out(t) x0_hat(x_t, t),
    c_skip(t) = sd^2 / ((s n)^2 + sd^2),   c_out(t) = s n / sqrt((s n)^2 + sd^2),

where n is the timestep the backbone is conditioned on (the process's c_noise, rounded to the
integer timestep on a discrete chain, so 0 at t_min), s = ``timestep_scaling`` (10 as released) and x0_hat the x0 of the
teacher's parameterization (eps, v or x0 prediction) from the backbone's output on the unscaled
x_t. c_skip(t_min) = 1 and c_out(t_min) = 0, so f(x, t_min) = x exactly.

This is not the CM paper's form (``consistency``, c_out = sd (s - s_min) / sqrt(s^2 + sd^2) in
EDM's sigma): the released c_out lacks the factor sd and is a function of the timestep, not of
sigma (diffusers issue #8547). Published LCM weights were trained with this form and sample
exactly as in diffusers only with it; the ``consistency`` member stays the default for CM entries.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from torch import Tensor

from components.denoisers.base import Plain
from components.denoisers.eps import Eps
from components.denoisers.v import V
from components.denoisers.x0 import X0
from components.noise.base import NoiseProcess
from components.spec import Spec
from components.util import bcast

_BASE = {"eps": Eps, "v": V, "x0": X0}


class LcmSpec(Spec):
    kind: Literal["lcm"] = "lcm"
    prediction: Literal["eps", "v", "x0"] = Field("eps", description="what the backbone predicts (the teacher's parameterization)")
    sigma_data: float = Field(0.5, gt=0, description="sd of the boundary scalings (LCM: 0.5)")
    timestep_scaling: float = Field(10.0, gt=0, description="s on the discrete timestep (LCMScheduler: 10)")

    def build(self) -> Lcm:
        return Lcm(self)


class Lcm(Plain):
    def __init__(self, spec: LcmSpec):
        self.spec = spec
        self.base = _BASE[spec.prediction]()

    def scalings(self, t: Tensor, process: NoiseProcess) -> tuple[Tensor, Tensor]:
        """(c_skip, c_out) at per-row times t (LCMScheduler.get_scalings_for_boundary_condition_discrete)."""
        n = process.model_time(t.double())
        if getattr(process, "timesteps", None) is not None:
            n = n.round()  # the integer timestep of a discrete chain (t reaches us as float32)
        n = n * self.spec.timestep_scaling
        sd2 = self.spec.sigma_data**2
        return sd2 / (n**2 + sd2), n / (n**2 + sd2).sqrt()

    def to_x0_eps(self, out: Tensor, x: Tensor, t: Tensor, process: NoiseProcess) -> tuple[Tensor, Tensor]:
        x0_hat, _ = self.base.to_x0_eps(out, x, t, process)
        c_skip, c_out = self.scalings(t, process)
        f = (bcast(c_out, x) * x0_hat + bcast(c_skip, x) * x).to(x.dtype)
        a, s = bcast(process.alpha(t), x), bcast(process.sigma(t), x)
        return f, (x - a * f) / s.clamp_min(1e-12)
