"""What every time grid shares: (process, steps) -> steps + 1 strictly decreasing times, the last
one 0 (the clean end: solvers take sigma = 0 there, whatever the process's sigma(0)).

On a discrete chain (``process.timesteps = T``) grids defined in t (uniform, quadratic, leading,
trailing) land on chain steps n/T. Where rounding puts two times on one chain step (a quadratic
grid's dense end, say), the earlier one moves up one step at a time until the chain steps are
distinct. Grids defined in sigma or log-SNR (karras, log_snr) keep their exact, fractional chain
times, as k-diffusion and diffusers do with Karras sigmas: a discrete chain is defined between
its steps (log alphabar is linear there).
"""

from __future__ import annotations

import torch
from torch import Tensor

from components.noise.base import NoiseProcess


def check_steps(process: NoiseProcess, steps: int) -> None:
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if process.timesteps is not None and steps > process.timesteps:
        raise ValueError(f"steps={steps} exceeds the {process.timesteps} steps of the discrete chain")


def fractions(steps: int, ends_at_zero: bool) -> Tensor:
    """``steps`` positions in [0, 1], decreasing from 1. When the grid's low end is the clean end
    itself (a process with t_min = 0, e.g. rectified flow), they stop one interval short of 0, so
    the appended 0 completes ``steps`` equal intervals: rectified flow's N-step Euler grid."""
    if ends_at_zero:
        return torch.linspace(1, 0, steps + 1, dtype=torch.float64)[:-1]
    return torch.linspace(1, 0, steps, dtype=torch.float64)


def finish(process: NoiseProcess, ts: Tensor, snap: bool = True) -> Tensor:
    """Snap onto a discrete chain (if ``snap``), check, and append the clean end t = 0."""
    ts = ts.double()
    if snap and process.timesteps is not None:
        T = process.timesteps
        k = (ts * T).round().clamp(1, T)
        for i in range(len(k) - 2, -1, -1):  # distinct chain steps, pushed up from the clean end
            k[i] = torch.maximum(k[i], k[i + 1] + 1)
        if k[0] > T:
            raise ValueError(f"{len(k)} distinct steps do not fit the {T}-step chain")
        ts = k / T
    if not torch.isfinite(ts).all() or (ts <= 0).any():
        raise ValueError(f"time grid must be finite and positive before the clean end: {ts.tolist()}")
    if (ts[1:] >= ts[:-1]).any():
        raise ValueError(f"time grid is not strictly decreasing: {ts.tolist()}")
    return torch.cat([ts, ts.new_zeros(1)])


def ve_sigma_range(process: NoiseProcess, sigma_min: float | None, sigma_max: float | None, grid: str) -> tuple[float, float]:
    """EDM sigmas (sigma / alpha) at the ends of a sigma-space grid: given, or the process's own
    at t_min and t_max. A range the process cannot reach, or an infinite end, is an error."""
    t_ends = torch.tensor([process.t_min, process.t_max], dtype=torch.float64)
    own_min, own_max = (float(v) for v in process.ve_sigma(t_ends))
    lo = own_min if sigma_min is None else sigma_min
    hi = own_max if sigma_max is None else sigma_max
    if not (hi < float("inf")):
        raise ValueError(
            f"{grid} grid: sigma/alpha is infinite at t_max = {process.t_max} of {process!r} (alpha = 0 there); "
            "give the grid a finite sigma_max"
        )
    tol = 1e-6 * max(own_max, 1.0)
    if hi > own_max + tol or lo < own_min - 1e-6 * max(own_min, 1e-12):
        raise ValueError(
            f"{grid} grid: sigma range [{lo:g}, {hi:g}] exceeds the process's [{own_min:g}, {own_max:g}] "
            f"(sigma/alpha at t_min = {process.t_min:g}, t_max = {process.t_max:g})"
        )
    if lo >= hi:
        raise ValueError(f"{grid} grid: sigma_min ({lo:g}) must be below sigma_max ({hi:g})")
    return lo, hi
