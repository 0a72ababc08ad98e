"""Uniform time grid: ``steps`` times evenly spaced from t_max down to t_min, then 0.

On a discrete chain the times are snapped to its steps (so steps = T is DDPM's full chain
t = T/T, ..., 1/T). The final 0 is the clean end: the last solver step lands on x0_hat.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from components.noise.base import NoiseProcess
from components.spec import Spec


class UniformSpec(Spec):
    kind: Literal["uniform"] = "uniform"

    def build(self) -> Uniform:
        return Uniform()


class Uniform:
    def __call__(self, process: NoiseProcess, steps: int) -> Tensor:
        check_steps(process, steps)
        ts = torch.linspace(process.t_max, process.t_min, steps, dtype=torch.float64)
        return finish(process, ts)


def check_steps(process: NoiseProcess, steps: int) -> None:
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if process.timesteps is not None and steps > process.timesteps:
        raise ValueError(f"steps={steps} exceeds the {process.timesteps} steps of the discrete chain")


def finish(process: NoiseProcess, ts: Tensor) -> Tensor:
    """Snap onto a discrete chain, check strictly decreasing, append the clean end t = 0."""
    ts = process.discretize(ts.double())
    if (ts[1:] >= ts[:-1]).any():
        raise ValueError(f"time grid is not strictly decreasing after snapping to the chain: {ts.tolist()}")
    return torch.cat([ts, ts.new_zeros(1)])
