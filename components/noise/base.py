"""The noise-process contract (DESIGN.md section 2).

    x_t = alpha(t) * x_0 + sigma(t) * eps,    eps ~ N(0, I)

A process knows alpha, sigma, their derivatives, their inverses (t from sigma, t from log-SNR),
the prior at t_max, the training distribution of t, and how to add noise. Nothing else.
All maps take and return tensors of times; they compute in float64 and return t's dtype.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

import torch
from torch import Tensor

from components.random import RandomSource
from components.util import bcast


class NoiseProcess(ABC):
    #: smallest and largest time the model is trained on / sampled from.
    t_min: float
    t_max: float
    #: number of discrete steps T when the process is the discrete chain t in {1/T, ..., 1}.
    timesteps: int | None = None

    @abstractmethod
    def alpha(self, t: Tensor) -> Tensor: ...

    @abstractmethod
    def sigma(self, t: Tensor) -> Tensor: ...

    @abstractmethod
    def t_from_log_snr(self, log_snr: Tensor) -> Tensor:
        """The time at which log(alpha^2 / sigma^2) equals ``log_snr``."""

    @abstractmethod
    def t_from_sigma(self, sigma: Tensor) -> Tensor:
        """The time at which this process's own sigma(t) equals ``sigma``."""

    def log_snr(self, t: Tensor) -> Tensor:
        t64 = t.double()
        return (2 * (self.alpha(t64).log() - self.sigma(t64).log())).to(t.dtype)

    def ve_sigma(self, t: Tensor) -> Tensor:
        """sigma / alpha = exp(-log_snr / 2): the noise level of the scaled path
        x / alpha = x0 + (sigma / alpha) eps, i.e. EDM's sigma(t) with scaling s(t) = alpha(t)
        (Karras et al. 2022, eq. 4). Infinite where alpha = 0 (the rectified prior)."""
        t64 = t.double()
        return (self.sigma(t64) / self.alpha(t64)).to(t.dtype)

    def t_from_ve_sigma(self, ve_sigma: Tensor) -> Tensor:
        """The time at which sigma / alpha equals ``ve_sigma`` (so any grid in EDM's sigma, such as
        Karras et al.'s, can be laid on any process)."""
        return self.t_from_log_snr(-2 * ve_sigma.double().log()).to(ve_sigma.dtype)

    def derivatives(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """(d alpha / dt, d sigma / dt), by autograd unless a process gives closed forms."""
        with torch.enable_grad():
            t64 = t.detach().double().requires_grad_(True)
            da = torch.autograd.grad(self.alpha(t64).sum(), t64)[0]
            ds = torch.autograd.grad(self.sigma(t64).sum(), t64)[0]
        return da.to(t.dtype), ds.to(t.dtype)

    def add_noise(self, x0: Tensor, eps: Tensor, t: Tensor) -> Tensor:
        return bcast(self.alpha(t), x0) * x0 + bcast(self.sigma(t), x0) * eps

    def prior_std(self) -> float:
        """Standard deviation of the prior x_T ~ N(0, prior_std^2 I)."""
        return 1.0

    def prior(self, shape: tuple[int, ...], rng: RandomSource) -> Tensor:
        """x_T for each of the noise source's rows; ``shape`` is one sample's (C, H, W)."""
        return rng.randn(*shape) * self.prior_std()

    def sample_t(self, rng: RandomSource) -> Tensor:
        """Training times: uniform over {1/T, ..., 1} when discrete, else U(t_min, t_max)."""
        if self.timesteps is not None:
            return rng.randint(1, self.timesteps + 1).float() / self.timesteps
        return self.t_min + (self.t_max - self.t_min) * rng.rand()

    def model_time(self, t: Tensor) -> Tensor:
        """The noise input c_noise a plain backbone is conditioned on (parameterizations such
        as EDM's may override it). Discrete chains use the 0-based step index, as diffusers'
        UNets expect; continuous ones (T-1) * t with T = 1000, as EDM's VP (Table 1)."""
        if self.timesteps is not None:
            return t * self.timesteps - 1
        return 999.0 * t

    def __repr__(self) -> str:
        return f"{type(self).__name__}(t_min={self.t_min:g}, t_max={self.t_max:g}, T={self.timesteps})"


class VPProcess(NoiseProcess):
    """Variance preserving: alpha^2 + sigma^2 = 1, alpha = sqrt(alphabar(t)).

    Subclasses give log alphabar(t) in closed form (continuous) or as a table of T+1 values at
    t = n/T (the discrete chain); between table points log alphabar is linear in t, so the
    chain's own times reproduce DDPM exactly and any other time is well defined.
    """

    eps_t: float = 1e-5

    def __init__(self, timesteps: int | None, table: Tensor | None, eps_t: float = 1e-5):
        self.timesteps = timesteps
        self._table = table  # float64 (T+1,), table[0] = 0, decreasing
        if timesteps is not None:
            self.t_min, self.t_max = 1.0 / timesteps, 1.0
        else:
            self.t_min, self.t_max = eps_t, 1.0

    # -- continuous closed forms (subclasses) ---------------------------------------------
    def _log_alphabar_continuous(self, t: Tensor) -> Tensor:
        raise NotImplementedError

    def _t_from_log_alphabar_continuous(self, lab: Tensor) -> Tensor:
        raise NotImplementedError

    # -- log alphabar and its inverse --------------------------------------------------------
    def log_alphabar(self, t: Tensor) -> Tensor:
        t = t.double()
        if self._table is None:
            return self._log_alphabar_continuous(t)
        T = self.timesteps
        table = self._table.to(t.device)
        pos = t * T  # linear extrapolation outside [0, 1] keeps derivatives defined at the ends
        idx = pos.detach().floor().clamp(0, T - 1).long()
        lo, hi = table[idx], table[idx + 1]
        return lo + (pos - idx) * (hi - lo)

    def t_from_log_alphabar(self, lab: Tensor) -> Tensor:
        lab = lab.double()
        if self._table is None:
            return self._t_from_log_alphabar_continuous(lab)
        T = self.timesteps
        neg = -self._table.to(lab.device)  # increasing
        j = torch.searchsorted(neg, (-lab).contiguous())
        idx = (j - 1).clamp(0, T - 1)
        lo, hi = self._table.to(lab.device)[idx], self._table.to(lab.device)[idx + 1]
        frac = ((lab - lo) / (hi - lo)).clamp(0, 1)
        return (idx + frac) / T

    # -- the contract ------------------------------------------------------------------------
    def alpha(self, t: Tensor) -> Tensor:
        return (0.5 * self.log_alphabar(t)).exp().to(t.dtype)

    def sigma(self, t: Tensor) -> Tensor:
        return (-torch.expm1(self.log_alphabar(t))).clamp_min(0).sqrt().to(t.dtype)

    def log_snr(self, t: Tensor) -> Tensor:
        lab = self.log_alphabar(t)
        return (lab - torch.log(-torch.expm1(lab))).to(t.dtype)

    def t_from_log_snr(self, log_snr: Tensor) -> Tensor:
        # alphabar = sigmoid(log_snr)
        lab = torch.nn.functional.logsigmoid(log_snr.double())
        return self.t_from_log_alphabar(lab).to(log_snr.dtype)

    def t_from_sigma(self, sigma: Tensor) -> Tensor:
        lab = torch.log1p(-sigma.double() ** 2)
        return self.t_from_log_alphabar(lab).to(sigma.dtype)

    @property
    def alphas_cumprod(self) -> Tensor:
        """alphabar at the discrete chain's steps 1..T (diffusers' ``alphas_cumprod``)."""
        if self._table is None:
            raise ValueError(f"{type(self).__name__} is continuous (timesteps=None): no discrete table")
        return self._table[1:].exp()


def table_from_betas(betas: Tensor) -> Tensor:
    """log alphabar at n = 0..T from the betas of a discrete chain (Ho et al. 2020, eq. 4)."""
    lab = torch.cumsum(torch.log1p(-betas.double()), 0)
    return torch.cat([lab.new_zeros(1), lab])
