"""Time grid uniform in log-SNR, lambda = log(alpha^2 / sigma^2) (the "logSNR" time steps of
DPM-Solver, Lu et al. 2022, section 3.3): lambda_i evenly spaced from lambda(t_max) up to
lambda(t_min), t_i = process.t_from_log_snr(lambda_i), then 0. Equal steps in lambda are what the
exponential integrators (DDIM, DPM-Solver++) are accurate in. Ends default to the process's;
where one is infinite (rectified flow's t = 0 and t = 1) give it. Fractional chain times.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import Field, model_validator
from torch import Tensor

from components.grids.base import check_steps, finish
from components.noise.base import NoiseProcess
from components.spec import Spec


class LogSnrSpec(Spec):
    kind: Literal["log_snr"] = "log_snr"
    log_snr_min: float | None = Field(None, description="lambda at the first (noisiest) time; None = lambda(t_max)")
    log_snr_max: float | None = Field(None, description="lambda at the last time before 0; None = lambda(t_min)")

    @model_validator(mode="after")
    def _ordered(self) -> LogSnrSpec:
        if self.log_snr_min is not None and self.log_snr_max is not None and self.log_snr_min >= self.log_snr_max:
            raise ValueError(f"log_snr_min ({self.log_snr_min}) must be below log_snr_max ({self.log_snr_max})")
        return self

    def build(self) -> LogSnr:
        return LogSnr(self)


class LogSnr:
    def __init__(self, spec: LogSnrSpec):
        self.spec = spec

    def __call__(self, process: NoiseProcess, steps: int) -> Tensor:
        check_steps(process, steps)
        ends = process.log_snr(torch.tensor([process.t_max, process.t_min], dtype=torch.float64))
        lo = float(ends[0]) if self.spec.log_snr_min is None else self.spec.log_snr_min
        hi = float(ends[1]) if self.spec.log_snr_max is None else self.spec.log_snr_max
        for name, v in (("log_snr_min", lo), ("log_snr_max", hi)):
            if not math.isfinite(v):
                raise ValueError(
                    f"log_snr grid: the log-SNR of {process!r} is {v} at its end; give the grid a finite {name}"
                )
        if hi <= lo:
            raise ValueError(f"log_snr grid: log_snr_min ({lo:g}) must be below log_snr_max ({hi:g})")
        lam = torch.linspace(lo, hi, steps, dtype=torch.float64) if steps > 1 else torch.tensor([lo], dtype=torch.float64)
        return finish(process, process.t_from_log_snr(lam), snap=False)
