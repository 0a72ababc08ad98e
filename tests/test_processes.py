"""The ve, edm and rectified processes match their papers' formulas; for every process the maps
t <-> sigma <-> log-SNR <-> EDM sigma invert each other and the derivatives are right."""

from __future__ import annotations

import math

import pytest
import torch

from components.noise import EdmProcessSpec, RectifiedSpec, VeSpec, VpCosineSpec, VpLinearSpec

pytestmark = pytest.mark.usefixtures("one_thread")

ALL = {
    "vp_linear": VpLinearSpec(),
    "vp_linear_cont": VpLinearSpec(timesteps=None),
    "vp_cosine_cont": VpCosineSpec(timesteps=None),
    "ve": VeSpec(),
    "edm": EdmProcessSpec(),
    "rectified": RectifiedSpec(),
    "fm_sigma_min": RectifiedSpec(sigma_min=0.1),
}


def interior(p, n=41):
    """Times strictly inside (t_min, t_max), away from a discrete chain's kinks."""
    if p.timesteps is not None:
        return (torch.arange(10, 990, 25, dtype=torch.float64) + 0.5) / 1000
    return torch.linspace(p.t_min, p.t_max, n, dtype=torch.float64)[1:-1]


def test_ve_is_song_et_al():
    """sigma(t) = sigma_min (sigma_max / sigma_min)^t, alpha = 1 (Song et al. 2021, eq. 30)."""
    p = VeSpec(sigma_min=0.01, sigma_max=50).build()
    t = torch.tensor([0.0, 0.25, 0.5, 1.0], dtype=torch.float64)
    torch.testing.assert_close(p.sigma(t), 0.01 * 5000.0**t)
    torch.testing.assert_close(p.alpha(t), torch.ones_like(t))
    assert p.prior_std() == 50 and (p.t_min, p.t_max) == (1e-5, 1.0)
    # c_noise of EDM's VE preconditioning (Table 1): ln(sigma / 2)
    torch.testing.assert_close(p.model_time(t), (0.01 * 5000.0**t / 2).log())


def test_edm_time_is_sigma():
    p = EdmProcessSpec().build()
    t = torch.tensor([0.002, 0.5, 80.0], dtype=torch.float64)
    torch.testing.assert_close(p.sigma(t), t)
    torch.testing.assert_close(p.log_snr(t), -2 * t.log())
    torch.testing.assert_close(p.model_time(t), t.log() / 4)  # Table 1, "Ours"
    assert (p.t_min, p.t_max, p.prior_std()) == (0.002, 80.0, 80.0)


def test_rectified_is_the_straight_path_and_lipmans_ot_path():
    t = torch.linspace(0, 1, 11, dtype=torch.float64)
    rf = RectifiedSpec().build()
    torch.testing.assert_close(rf.alpha(t), 1 - t)
    torch.testing.assert_close(rf.sigma(t), t)
    # Lipman et al. eq. 20-21 in their time u = 1 - t: mu_u = u x1, sigma_u = 1 - (1 - sigma_min) u,
    # conditional field u_u(x | x1) = (x1 - (1 - sigma_min) x) / (1 - (1 - sigma_min) u).
    smin = 0.1
    fm = RectifiedSpec(sigma_min=smin).build()
    torch.manual_seed(0)
    x1, eps = torch.randn(11, 3, dtype=torch.float64), torch.randn(11, 3, dtype=torch.float64)
    u = (1 - t)[:-1, None]  # Lipman's time, u < 1
    x = fm.add_noise(x1[:-1], eps[:-1], t[:-1])
    lipman_x = u * x1[:-1] + (1 - (1 - smin) * u) * eps[:-1]
    torch.testing.assert_close(x, lipman_x)
    lipman_field = (x1[:-1] - (1 - smin) * x) / (1 - (1 - smin) * u)
    da, ds = fm.derivatives(t[:-1])
    ours = da[:, None] * x1[:-1] + ds[:, None] * eps[:-1]  # dx/dt in our time
    torch.testing.assert_close(-ours, lipman_field)


@pytest.mark.parametrize("name", ALL)
def test_maps_invert_each_other(name):
    p = ALL[name].build()
    t = interior(p)
    torch.testing.assert_close(p.t_from_sigma(p.sigma(t)), t, atol=1e-9, rtol=1e-7)
    torch.testing.assert_close(p.t_from_log_snr(p.log_snr(t)), t, atol=1e-7, rtol=1e-6)
    torch.testing.assert_close(p.t_from_ve_sigma(p.ve_sigma(t)), t, atol=1e-7, rtol=1e-6)
    torch.testing.assert_close(p.ve_sigma(t), (-p.log_snr(t) / 2).exp(), rtol=1e-9, atol=0)
    torch.testing.assert_close(p.log_snr(t), 2 * (p.alpha(t) / p.sigma(t)).log(), rtol=1e-9, atol=1e-9)
    assert (p.log_snr(t)[1:] < p.log_snr(t)[:-1]).all(), "log-SNR must decrease in t"


@pytest.mark.parametrize("name", ALL)
def test_derivatives_match_finite_differences(name):
    p = ALL[name].build()
    t = interior(p)
    h = 1e-6 * max(1.0, p.t_max)
    da, ds = p.derivatives(t)
    torch.testing.assert_close(da, (p.alpha(t + h) - p.alpha(t - h)) / (2 * h), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ds, (p.sigma(t + h) - p.sigma(t - h)) / (2 * h), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ALL)
def test_prior_matches_the_marginal_at_t_max(name):
    """x_T ~ N(0, prior_std^2) is the marginal at t_max of unit-variance data, up to 1e-3."""
    p = ALL[name].build()
    t = torch.tensor([p.t_max], dtype=torch.float64)
    a, s = float(p.alpha(t)), float(p.sigma(t))
    assert p.prior_std() == pytest.approx(math.sqrt(a * a + s * s), rel=1e-3)
    assert a / p.prior_std() <= 0.02, "the prior must carry (almost) no data"


def test_rectified_ends():
    p = RectifiedSpec().build()
    assert float(p.ve_sigma(torch.tensor([1.0], dtype=torch.float64))) == math.inf
    assert float(p.log_snr(torch.tensor([0.0], dtype=torch.float64))) == math.inf
    assert float(p.t_from_log_snr(torch.tensor([-math.inf], dtype=torch.float64))) == 1.0


def test_invalid_ranges_are_named():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="sigma_max"):
        VeSpec(sigma_min=1.0, sigma_max=0.5)
    with pytest.raises(ValidationError, match="sigma_max"):
        EdmProcessSpec(sigma_min=90.0)
    with pytest.raises(ValidationError, match="sigma_min"):
        RectifiedSpec(sigma_min=1.0)
