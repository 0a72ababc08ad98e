"""EDM (Karras et al. 2022): the preconditioning equals Table 1 for sample sigmas (and diffusers'
EDM scheduler), works on any process through sigma/alpha, and the loss has the paper's sigma
distribution and weighting."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from components.denoisers import Denoiser
from components.denoisers.edm import EdmPrecondSpec
from components.noise import EdmProcessSpec
from components.noise import RectifiedSpec, VeSpec, VpLinearSpec
from components.objectives import EdmLossSpec
from components.random import RandomSource

pytestmark = pytest.mark.usefixtures("one_thread")

SIGMAS = torch.tensor([0.002, 0.02, 0.2, 0.5, 1.0, 2.5, 10.0, 80.0], dtype=torch.float64)
SD = 0.5


def table1(row: str, s: float) -> tuple[float, float, float, float]:
    """EDM Table 1, typed from the paper: (c_skip, c_out, c_in, c_noise)."""
    if row == "edm":
        return (SD**2 / (s**2 + SD**2), s * SD / math.sqrt(s**2 + SD**2), 1 / math.sqrt(s**2 + SD**2), math.log(s) / 4)
    if row == "vp":  # c_noise = (M - 1) sigma^-1(s), sigma(t) = sqrt(exp(beta_d t^2 / 2 + beta_min t) - 1)
        t = (math.sqrt(0.1**2 + 2 * 19.9 * math.log(1 + s**2)) - 0.1) / 19.9
        return 1.0, -s, 1 / math.sqrt(s**2 + 1), 999 * t
    return 1.0, s, 1.0, math.log(s / 2)  # ve


@pytest.mark.parametrize("row", ["edm", "vp", "ve"])
def test_coefficients_are_table_1(row):
    pre = EdmPrecondSpec(sigma_data=SD, preconditioning=row).build()
    got = torch.stack(pre.scalings(SIGMAS), 1)
    want = torch.tensor([table1(row, float(s)) for s in SIGMAS], dtype=torch.float64)
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-12)


def test_vp_row_noise_label_inverts_the_vp_sde():
    """On the continuous VP SDE (beta 0.1..20, EDM's VP), (M-1) sigma^-1 is 999 t exactly."""
    vp = VpLinearSpec(timesteps=None).build()
    t = torch.linspace(0.01, 1, 9, dtype=torch.float64)
    pre = EdmPrecondSpec(preconditioning="vp").build()
    torch.testing.assert_close(pre.scalings(vp.ve_sigma(t))[3], 999 * t)


class Recorder(nn.Module):
    """A backbone that records what it is given and returns a fixed output F."""

    def __init__(self, out: torch.Tensor):
        super().__init__()
        self.out, self.seen = out, None

    def forward(self, x, c_noise, cond=None):
        self.seen = (x.clone(), c_noise.clone())
        return self.out


@pytest.mark.parametrize("row", ["edm", "vp", "ve"])
@pytest.mark.parametrize(
    "process", [EdmProcessSpec(), VpLinearSpec(timesteps=None), VeSpec(), RectifiedSpec()], ids=["edm", "vp", "ve", "rf"]
)
def test_denoiser_is_eq_7_on_the_scaled_path_of_any_process(row, process):
    """D(x~; s) = c_skip x~ + c_out F(c_in x~; c_noise) with s = sigma/alpha, x~ = x/alpha (eq. 7)."""
    p = process.build()
    torch.manual_seed(0)
    t = torch.linspace(p.t_min, p.t_max, 8, dtype=torch.float64)[1:-1]
    x, f = torch.randn(6, 2, 3, 3, dtype=torch.float64), torch.randn(6, 2, 3, 3, dtype=torch.float64)
    backbone = Recorder(f)
    pred = Denoiser(backbone, p, EdmPrecondSpec(sigma_data=SD, preconditioning=row).build())(x, t.float())
    t32 = t.float().double()
    a, s = p.alpha(t32), p.ve_sigma(t32)
    rows = torch.tensor([table1(row, float(v)) for v in s], dtype=torch.float64)
    c_skip, c_out, c_in, c_noise = (rows[:, i].reshape(-1, 1, 1, 1) for i in range(4))
    x_tilde = x / a.reshape(-1, 1, 1, 1)
    torch.testing.assert_close(backbone.seen[0], c_in * x_tilde, rtol=1e-6, atol=1e-8)
    torch.testing.assert_close(backbone.seen[1].double(), c_noise.flatten(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(pred.x0, c_skip * x_tilde + c_out * f, rtol=1e-6, atol=1e-8)
    torch.testing.assert_close(a.reshape(-1, 1, 1, 1) * pred.x0 + p.sigma(t32).reshape(-1, 1, 1, 1) * pred.eps, x)


def test_edm_row_is_finite_at_the_rectified_prior():
    """Where alpha = 0 the edm row's limits are c_in x~ = x / sigma, c_skip x~ = 0, c_out = sigma_data."""
    p = RectifiedSpec().build()
    x, f = torch.randn(2, 1, 2, 2, dtype=torch.float64), torch.randn(2, 1, 2, 2, dtype=torch.float64)
    backbone = Recorder(f)
    pred = Denoiser(backbone, p, EdmPrecondSpec().build())(x, torch.ones(2))
    torch.testing.assert_close(backbone.seen[0], x)
    assert torch.isfinite(backbone.seen[1]).all()
    torch.testing.assert_close(pred.x0, SD * f)


def test_preconditioning_equals_diffusers_edm_scheduler():
    """Peer: diffusers' EDMEulerScheduler(sigma_data=0.5, prediction_type='epsilon') precondition_*."""
    diffusers = pytest.importorskip("diffusers")
    sched = diffusers.EDMEulerScheduler(sigma_data=SD, prediction_type="epsilon")
    pre = EdmPrecondSpec(sigma_data=SD).build()
    x, f = torch.randn(len(SIGMAS), 3, dtype=torch.float64), torch.randn(len(SIGMAS), 3, dtype=torch.float64)
    s = SIGMAS[:, None]
    c_skip, c_out, c_in, c_noise = (c[:, None] for c in pre.scalings(SIGMAS))
    torch.testing.assert_close(c_in * x, sched.precondition_inputs(x, s))
    torch.testing.assert_close(c_noise.flatten(), sched.precondition_noise(SIGMAS))
    torch.testing.assert_close(c_skip * x + c_out * f, sched.precondition_outputs(x, f, s))


class Zero(nn.Module):
    def forward(self, x, c_noise, cond=None):
        self.c_noise = c_noise
        return torch.zeros_like(x)


def test_loss_weighting_makes_the_effective_target_unit_variance():
    """With F = 0 and data of std sigma_data, lambda(s) E||D - x0||^2 = E[F_target^2] = 1 at every
    sigma (Karras et al., eq. 8 and appendix B.6), so the EDM loss is 1 whatever sigmas are drawn;
    the drawn ln(sigma) ~ N(P_mean, P_std^2)."""
    p = EdmProcessSpec().build()
    backbone = Zero()
    den = Denoiser(backbone, p, EdmPrecondSpec(sigma_data=SD).build())
    loss_fn = EdmLossSpec(sigma_data=SD).build()
    n = 8192
    x0 = SD * RandomSource.from_seed(1, n).randn(1, 4, 4)
    loss, _ = loss_fn.loss(den, {"x0": x0, "cond": None}, RandomSource.from_seed(2, n), step=0)
    assert loss.item() == pytest.approx(1.0, abs=0.03)
    log_sigma = 4 * backbone.c_noise.double()  # c_noise = ln(sigma) / 4
    assert log_sigma.mean().item() == pytest.approx(-1.2, abs=0.05)
    assert log_sigma.std().item() == pytest.approx(1.2, abs=0.05)


def test_loss_weight_formula():
    w = EdmLossSpec(sigma_data=SD).build().weight(SIGMAS)
    torch.testing.assert_close(w, (SIGMAS**2 + SD**2) / (SIGMAS * SD) ** 2)
