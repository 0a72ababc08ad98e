"""Straightness of a flow (Liu et al. 2022, eq. 4 / Definition 2.4):

    S(Z) = int_0^1 E || (Z_1 - Z_0) - dZ_t/dt ||^2 dt,

zero iff every trajectory is a straight line traversed at constant speed (then one Euler step is
exact). Estimated along Euler trajectories of dx/dt = v(x, t) (the path's velocity
alpha' x0_hat + sigma' eps_hat) on a time grid, with the squared norm summed over dimensions and
the time integral normalized to the grid's span.
"""

from __future__ import annotations

import torch
from torch import Tensor

from components.denoisers.base import DenoiseFn
from components.noise.base import NoiseProcess
from components.solvers.base import at, derivative_at


@torch.no_grad()
def straightness(denoise: DenoiseFn, process: NoiseProcess, x: Tensor, ts: Tensor) -> float:
    velocities, dts = [], []
    start = x
    for t, s in zip(ts[:-1], ts[1:]):
        v = denoise(x, at(t, x)).velocity(*derivative_at(process, t))
        velocities.append(v)
        dts.append(float(t - s))
        x = x - float(t - s) * v
    span = float(ts[0] - ts[-1])
    chord = (x - start) / -span  # the constant velocity of the straight line, in dx/dt
    total = sum(dt * (v - chord).flatten(1).pow(2).sum(1).mean() for v, dt in zip(velocities, dts))
    return float(total) / span
