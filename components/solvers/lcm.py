"""Multistep latent consistency sampling (Luo et al. 2023, LCM, Algorithm 3; diffusers'
``LCMScheduler``):

    x <- f(x_{tau_1}, tau_1)
    for tau in tau_2 > ... > tau_N:
        z ~ N(0, I);  x_tau = alpha(tau) x + sigma(tau) z;  x <- f(x_tau, tau)

on the LCM timestep schedule of a discrete chain of T steps: the distillation chain of
``original_inference_steps`` levels with skipping interval k = T // original_inference_steps
(timesteps k - 1, 2k - 1, ..., T - 1), of which N evenly spaced indices are taken from the top
(floor(linspace(0, 50, N, endpoint=False)); 4 steps: 999, 759, 499, 259). N is the step count
(the grid gives only its length) unless ``timesteps`` lists discrete timesteps. Unlike the
``consistency`` solver (CM Algorithm 1) the re-noising uses the process's sigma(tau) itself, as
LCMScheduler does. The guidance scale w is not guidance here: an LCM takes it as an input
(cond["w"], set by the model when its backbone embeds w). One network call per step.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
from pydantic import Field, field_validator
from torch import Tensor

from components.denoisers.base import DenoiseFn
from components.noise.base import NoiseProcess
from components.random import RandomSource
from components.solvers.base import SolverTraits, alpha_sigma, at, fresh_noise
from components.spec import Spec


class LcmSamplerSpec(SolverTraits, Spec):
    kind: Literal["lcm"] = "lcm"
    original_inference_steps: int = Field(50, ge=1, le=100000, description="levels of the distillation chain (LCM: 50, k = 20)")
    timesteps: list[int] | None = Field(None, description="discrete timesteps, strictly decreasing; None: the LCM schedule")
    has_step: ClassVar[bool] = False  # re-noises between evaluations: no ODE step
    deterministic: ClassVar[bool] = False
    few_step: ClassVar[bool] = True

    @field_validator("timesteps")
    @classmethod
    def _decreasing(cls, v: list[int] | None) -> list[int] | None:
        if v is not None and (not v or v[-1] < 0 or any(b >= a for a, b in zip(v, v[1:]))):
            raise ValueError(f"timesteps must be non-negative and strictly decreasing, got {v}")
        return v

    def build(self) -> LcmSampler:
        return LcmSampler(self)


def lcm_timesteps(train_steps: int, steps: int, original_steps: int = 50) -> list[int]:
    """LCMScheduler.set_timesteps: ``steps`` evenly spaced indices of the skipping schedule."""
    if not 1 <= steps <= original_steps <= train_steps:
        raise ValueError(f"lcm: steps={steps} must be in [1, original_inference_steps={original_steps}] and "
                         f"original_inference_steps at most the chain's {train_steps} timesteps")
    k = train_steps // original_steps
    origin = [(i + 1) * k - 1 for i in range(original_steps)][::-1]
    return [origin[int(torch.floor(v))] for v in torch.linspace(0, original_steps, steps + 1, dtype=torch.float64)[:-1]]


class LcmSampler:
    def __init__(self, spec: LcmSamplerSpec | None = None):
        self.spec = spec or LcmSamplerSpec()

    def times(self, process: NoiseProcess, steps: int) -> Tensor:
        """The schedule in process time: discrete timestep n is t = (n + 1) / T."""
        T = getattr(process, "timesteps", None)
        if T is None:
            raise ValueError(f"the lcm solver needs a discrete chain (timesteps set); {process!r} is continuous")
        ns = self.spec.timesteps or lcm_timesteps(T, steps, self.spec.original_inference_steps)
        if ns[0] >= T:
            raise ValueError(f"lcm.timesteps must stay below the chain's {T} timesteps, got {ns[0]}")
        return (torch.tensor(ns, dtype=torch.float64) + 1) / T

    def __call__(self, denoise: DenoiseFn, process: NoiseProcess, x: Tensor, ts: Tensor, rng: RandomSource) -> Tensor:
        taus = self.times(process, len(ts) - 1)
        x0 = denoise(x, at(taus[0], x)).x0
        for tau in taus[1:]:
            a, s = alpha_sigma(process, tau)
            x = a * x0 + s * fresh_noise(x0, rng)
            x0 = denoise(x, at(tau, x)).x0
        return x0
