"""Peers: our solvers give the same samples as diffusers' schedulers for the same eps-model, the
same grid and the same noise, to 1e-4. Each test names the scheduler and its settings. The
eps-model is a fixed smooth function of (x_t, timestep), where timestep is diffusers' 0-based
chain index (our c_noise on the discrete chain).

Grids are diffusers' integer spacings "trailing" and "leading" (our trailing / leading grids), or
our grid's timesteps passed as ``set_timesteps(timesteps=...)``. Not compared: "linspace" on
DDIMScheduler (its step goes to t - T // N whatever the spacing) and on Euler/Heun (fractional,
unrounded timesteps), and DPMSolverMultistep's own "leading" (N + 1 points, the last dropped)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from components.denoisers import Denoiser, EpsSpec, bind
from components.denoisers.edm import EdmPrecondSpec
from components.grids import KarrasSpec, LeadingSpec, QuadraticSpec, TrailingSpec, UniformSpec
from components.noise import EdmProcessSpec
from components.noise import VpLinearSpec
from components.random import RandomSource
from components.solvers import DdimSpec, Dpmpp2mSpec, EulerSpec, HeunSpec

diffusers = pytest.importorskip("diffusers")

pytestmark = pytest.mark.usefixtures("one_thread")

SHAPE = (6, 2, 4, 4)
BETAS = dict(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, beta_schedule="linear")
GRIDS = {"trailing": TrailingSpec(), "leading": LeadingSpec(), "uniform": UniformSpec(), "quadratic": QuadraticSpec()}


def make(cls, **kw):
    """A diffusers scheduler on the DDPM chain, its alphas_cumprod replaced by the float64 table
    (diffusers keeps a float32 one, whose 1 - alphabar is off by ~1e-4 relative at the first steps;
    with it the comparison would measure that rounding, not the algorithms)."""
    sched = cls(**BETAS, **kw)
    sched.alphas_cumprod = VpLinearSpec().build().alphas_cumprod
    return sched


def set_timesteps(sched, spacing: str, steps: int) -> None:
    """diffusers' own spacing, or our grid's 0-based integer timesteps passed explicitly."""
    if spacing in ("trailing", "leading"):
        sched.set_timesteps(steps)
    else:
        ts = GRIDS[spacing].build()(VpLinearSpec().build(), steps)[:-1]
        sched.set_timesteps(timesteps=(ts * 1000 - 1).round().long().tolist())


class Net(nn.Module):
    """A fixed network of (x_t, timestep): it guesses x0 = tanh(W x_t + b timestep / 1000) and
    returns the eps consistent with that guess on the DDPM chain, so samples stay O(1) as real
    ones do and 1e-4 is a meaningful tolerance in float32."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.w = nn.Parameter(torch.randn(2, 2, generator=g) * 0.5, requires_grad=False)
        self.b = nn.Parameter(torch.randn(2, generator=g), requires_grad=False)
        betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
        self.register_buffer("alphas_cumprod", torch.cumprod(1 - betas, 0))

    def forward(self, x, timestep, cond=None):
        tau = torch.as_tensor(timestep, dtype=torch.float64).reshape(-1, 1, 1, 1)
        h = torch.einsum("oc,bchw->bohw", self.w.double(), x.double()) + self.b.double().reshape(1, 2, 1, 1) * tau / 1000
        ab = self.alphas_cumprod[tau.round().long().clamp(0, 999)]
        return ((x.double() - ab.sqrt() * torch.tanh(h)) / (1 - ab).sqrt()).to(x.dtype)


class EdmNet(nn.Module):
    """EDM's F for the EDM-preconditioned comparison: a fixed smooth function of (x, c_noise)."""

    def forward(self, x, c_noise, cond=None):
        c = torch.as_tensor(c_noise, dtype=x.dtype).reshape(-1, 1, 1, 1)
        return torch.tanh(x.flip(1) + c)


def ours(solver, grid, steps, x_T, process=None, parameterization=None, net=None):
    process = process or VpLinearSpec().build()
    den = Denoiser(net or Net(), process, parameterization or EpsSpec().build())
    ts = grid.build()(process, steps)
    return solver.build()(bind(den), process, x_T, ts, RandomSource.from_seed(0, SHAPE[0])), ts


def x_T():
    """The same start for both, in float64 (diffusers keeps its sigmas in float32)."""
    return torch.randn(SHAPE, generator=torch.Generator().manual_seed(1), dtype=torch.float64)


@pytest.mark.parametrize("spacing", ["trailing", "leading"])
def test_ddim_equals_ddimscheduler(spacing):
    """DDIMScheduler(linear betas 1e-4..0.02, clip_sample=False, set_alpha_to_one=True,
    steps_offset=0, timestep_spacing=spacing), step(eta=0), 20 steps."""
    x0, _ = ours(DdimSpec(), GRIDS[spacing], 20, x_T())
    sched = make(diffusers.DDIMScheduler, clip_sample=False, set_alpha_to_one=True, steps_offset=0, timestep_spacing=spacing)
    sched.set_timesteps(20)
    net, x = Net(), x_T()
    for t in sched.timesteps:
        x = sched.step(net(x, t), t, x, eta=0.0).prev_sample
    torch.testing.assert_close(x0, x, rtol=0, atol=1e-4)


def test_ddim_eta1_equals_ddimscheduler_with_the_same_noise():
    """DDIMScheduler(linear betas, trailing, set_alpha_to_one=True), step(eta=1, variance_noise=z_i)
    with our per-step draws z_i."""
    x0, _ = ours(DdimSpec(eta=1.0), TrailingSpec(), 25, x_T())
    sched = make(diffusers.DDIMScheduler, clip_sample=False, set_alpha_to_one=True, timestep_spacing="trailing")
    sched.set_timesteps(25)
    draws = RandomSource.from_seed(0, SHAPE[0])
    net, x = Net(), x_T()
    for i, t in enumerate(sched.timesteps):
        z = draws.randn(*SHAPE[1:]).double() if i < len(sched.timesteps) - 1 else torch.zeros(SHAPE, dtype=torch.float64)
        x = sched.step(net(x, t), t, x, eta=1.0, variance_noise=z).prev_sample
    torch.testing.assert_close(x0, x, rtol=0, atol=1e-4)


def k_diffusion_loop(sched, x_T_vp, ts):
    """diffusers' Euler/Heun loop in its VE scaling, started from our x_T (x / alpha_T)."""
    p = VpLinearSpec().build()
    net = Net()
    x = x_T_vp / p.alpha(ts[:1].double())
    for t in sched.timesteps:
        x = sched.step(net(sched.scale_model_input(x, t), t), t, x).prev_sample
    return x


@pytest.mark.parametrize("spacing", ["trailing", "leading", "uniform"])
def test_euler_equals_eulerdiscretescheduler(spacing):
    """EulerDiscreteScheduler(linear betas, timestep_spacing trailing / leading or timesteps= our
    uniform grid's, final_sigmas_type='zero', s_churn=0), 20 steps."""
    x0, ts = ours(EulerSpec(), GRIDS[spacing], 20, x_T())
    sched = make(diffusers.EulerDiscreteScheduler, timestep_spacing=spacing if spacing != "uniform" else "linspace",
                                             final_sigmas_type="zero")
    set_timesteps(sched, spacing, 20)
    torch.testing.assert_close(x0, k_diffusion_loop(sched, x_T(), ts), rtol=0, atol=1e-4)


@pytest.mark.parametrize("spacing", ["trailing", "leading", "quadratic"])
def test_heun_equals_heundiscretescheduler(spacing):
    """HeunDiscreteScheduler(linear betas, timestep_spacing trailing / leading or timesteps= our
    quadratic grid's) = EDM Algorithm 2 with S_churn = 0, 15 steps (29 NFE)."""
    x0, ts = ours(HeunSpec(), GRIDS[spacing], 15, x_T())
    sched = make(diffusers.HeunDiscreteScheduler, timestep_spacing=spacing if spacing != "quadratic" else "linspace")
    set_timesteps(sched, spacing, 15)
    assert len(sched.timesteps) == 29
    torch.testing.assert_close(x0, k_diffusion_loop(sched, x_T(), ts), rtol=0, atol=1e-4)


@pytest.mark.parametrize("spacing", ["trailing", "quadratic"])
def test_dpmpp_2m_equals_dpmsolvermultistepscheduler(spacing):
    """DPMSolverMultistepScheduler(linear betas, algorithm_type='dpmsolver++', solver_order=2,
    solver_type='midpoint', lower_order_final=True, final_sigmas_type='zero', timestep_spacing
    trailing or timesteps= our quadratic grid's), 20 steps."""
    x0, _ = ours(Dpmpp2mSpec(), GRIDS[spacing], 20, x_T())
    sched = make(diffusers.DPMSolverMultistepScheduler, algorithm_type="dpmsolver++", solver_order=2, solver_type="midpoint", lower_order_final=True,
        final_sigmas_type="zero", timestep_spacing="trailing",
    )
    set_timesteps(sched, spacing, 20)
    net, x = Net(), x_T()
    for t in sched.timesteps:
        x = sched.step(net(x, t), t, x).prev_sample
    torch.testing.assert_close(x0, x, rtol=0, atol=1e-4)


def test_euler_with_edm_preconditioning_equals_edmeulerscheduler():
    """EDMEulerScheduler(sigma_min=0.002, sigma_max=80, sigma_data=0.5, rho=7, karras,
    prediction_type='epsilon' i.e. EDM's F) on the edm process with the EDM preconditioning, 18 steps."""
    process = EdmProcessSpec().build()
    start = 80 * x_T()
    x0, _ = ours(EulerSpec(), KarrasSpec(), 18, start, process, EdmPrecondSpec(sigma_data=0.5).build(), EdmNet())
    sched = diffusers.EDMEulerScheduler(sigma_min=0.002, sigma_max=80.0, sigma_data=0.5, rho=7.0,
                                        sigma_schedule="karras", prediction_type="epsilon")
    sched.set_timesteps(18)
    net, x = EdmNet(), start.clone()
    for t in sched.timesteps:
        x = sched.step(net(sched.scale_model_input(x, t), t), t, x).prev_sample
    torch.testing.assert_close(x0, x, rtol=0, atol=1e-4)
