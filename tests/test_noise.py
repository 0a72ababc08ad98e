"""The vp processes' alpha/sigma match their formulas, their inverses and derivatives agree,
and (when diffusers is installed) the discrete tables equal diffusers' schedulers'."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from components.noise import VpCosineSpec, VpLinearSpec

PROCESSES = {
    "vp_linear": VpLinearSpec(),
    "vp_linear_cont": VpLinearSpec(timesteps=None),
    "vp_cosine": VpCosineSpec(),
    "vp_cosine_cont": VpCosineSpec(timesteps=None),
}


def test_vp_linear_discrete_is_ddpm():
    """alphabar_n = prod_{i<=n} (1 - beta_i), betas = linspace(1e-4, 0.02, 1000) (Ho et al. eq. 4)."""
    p = VpLinearSpec().build()
    betas = np.linspace(1e-4, 0.02, 1000, dtype=np.float64)
    alphabar = np.cumprod(1 - betas)
    n = np.array([1, 2, 10, 500, 999, 1000])
    t = torch.tensor(n / 1000, dtype=torch.float64)
    np.testing.assert_allclose(p.alpha(t).numpy() ** 2, alphabar[n - 1], rtol=1e-12)
    np.testing.assert_allclose(p.sigma(t).numpy() ** 2, 1 - alphabar[n - 1], rtol=1e-12)


def test_vp_linear_continuous_is_the_vp_sde():
    """log alphabar(t) = -(beta_min t + (beta_max - beta_min) t^2 / 2) (Song et al. 2021, eq. 33)."""
    p = VpLinearSpec(timesteps=None).build()
    t = torch.linspace(0.01, 1, 7, dtype=torch.float64)
    lab = -(0.1 * t + 0.5 * 19.9 * t**2)
    torch.testing.assert_close(p.alpha(t), (lab / 2).exp())
    torch.testing.assert_close(p.sigma(t), (1 - lab.exp()).sqrt())


def test_vp_cosine_matches_improved_ddpm():
    """alphabar(t) = f(t)/f(0), f = cos^2(((t + s)/(1 + s)) pi/2), betas clipped at 0.999 (eq. 17)."""
    p = VpCosineSpec(timesteps=None).build()
    t = torch.linspace(0.01, 0.99, 9, dtype=torch.float64)
    f = lambda u: np.cos((u + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
    np.testing.assert_allclose(p.alpha(t).numpy() ** 2, f(t.numpy()) / f(0.0), rtol=1e-10)
    d = VpCosineSpec().build()
    ab = f(np.arange(1001) / 1000) / f(0.0)
    betas = np.minimum(1 - ab[1:] / ab[:-1], 0.999)
    np.testing.assert_allclose(d.alphas_cumprod.numpy(), np.cumprod(1 - betas), rtol=1e-10)


@pytest.mark.parametrize("name", PROCESSES)
def test_alpha_sigma_inverses_and_derivatives(name):
    p = PROCESSES[name].build()
    t = torch.linspace(p.t_min, p.t_max, 101, dtype=torch.float64)[1:-1]
    if p.timesteps is None:
        torch.testing.assert_close(p.alpha(t) ** 2 + p.sigma(t) ** 2, torch.ones_like(t))
    torch.testing.assert_close(p.t_from_log_snr(p.log_snr(t)), t, atol=1e-7, rtol=1e-6)
    torch.testing.assert_close(p.t_from_sigma(p.sigma(t)), t, atol=1e-7, rtol=1e-6)
    assert (p.log_snr(t)[1:] < p.log_snr(t)[:-1]).all(), "log-SNR must decrease in t"
    # derivatives against central differences, away from the discrete table's kinks
    h = 1e-7
    tt = t if p.timesteps is None else (torch.arange(10, 990, 97, dtype=torch.float64) + 0.5) / 1000
    da, ds = p.derivatives(tt)
    torch.testing.assert_close(da, (p.alpha(tt + h) - p.alpha(tt - h)) / (2 * h), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ds, (p.sigma(tt + h) - p.sigma(tt - h)) / (2 * h), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", PROCESSES)
def test_add_noise_and_sample_t(name):
    from components.random import RandomSource

    p = PROCESSES[name].build()
    rng = RandomSource.from_seed(0, 4096)
    t = p.sample_t(rng)
    assert t.shape == (4096,) and t.min() >= p.t_min - 1e-9 and t.max() <= p.t_max + 1e-9
    if p.timesteps is not None:
        k = t * p.timesteps
        torch.testing.assert_close(k, k.round())
    x0, eps = torch.ones(4, 3), torch.full((4, 3), 2.0)
    tt = torch.full((4,), 0.3)
    expect = p.alpha(tt)[:, None] * x0 + p.sigma(tt)[:, None] * eps
    torch.testing.assert_close(p.add_noise(x0, eps, tt), expect)


def test_discrete_tables_equal_diffusers():
    """Peer check: diffusers' DDPMScheduler 'linear' and 'squaredcos_cap_v2' alphas_cumprod."""
    diffusers = pytest.importorskip("diffusers")
    lin = diffusers.DDPMScheduler(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, beta_schedule="linear")
    np.testing.assert_allclose(VpLinearSpec().build().alphas_cumprod.numpy(), lin.alphas_cumprod.double().numpy(), rtol=1e-5, atol=1e-8)
    cos = diffusers.DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2")
    np.testing.assert_allclose(VpCosineSpec().build().alphas_cumprod.numpy(), cos.alphas_cumprod.double().numpy(), rtol=1e-5, atol=1e-8)


def test_model_time_is_diffusers_timestep_index():
    """On the discrete chain, c_noise at t = n/T is diffusers' 0-based index n - 1."""
    p = VpLinearSpec().build()
    t = torch.tensor([1 / 1000, 0.5, 1.0])
    torch.testing.assert_close(p.model_time(t), torch.tensor([0.0, 499.0, 999.0]))
