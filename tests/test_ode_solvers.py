"""Every solver on every process against the truth: with the exact denoiser of Gaussian data
N(mu, diag(s^2)) (zoo.testing.GaussianDenoiser) each solver must reproduce the data's mean and
covariance; the ODE solvers show their order of convergence on the closed-form probability-flow
trajectory; RK45 matches it to tight tolerance; classifier-free guidance reaches the guided
Gaussian through every solver."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from components.denoisers import Prediction, bind, count_calls
from components.grids import KarrasSpec, LogSnrSpec, UniformSpec
from components.noise import EdmProcessSpec, RectifiedSpec, VeSpec, VpCosineSpec, VpLinearSpec
from components.random import RandomSource
from components.solvers import (
    DdimSpec, DdpmSpec, Dpmpp2mSpec, EulerMaruyamaSpec, EulerSpec, HeunSpec, RfEulerSpec, Rk45Spec,
)
from zoo.testing import GaussianDenoiser

pytestmark = pytest.mark.usefixtures("one_thread")

MU = torch.tensor([1.5, -0.5, 0.0, 0.25], dtype=torch.float64)
S = torch.tensor([0.4, 1.0, 0.2, 0.7], dtype=torch.float64)

PROCESSES = {
    "vp_linear": VpLinearSpec(),
    "vp_cosine": VpCosineSpec(timesteps=None),
    "ve": VeSpec(),
    "edm": EdmProcessSpec(),
    "rectified": RectifiedSpec(),
    "fm_sigma_min": RectifiedSpec(sigma_min=0.01),
}
GRID = {"edm": KarrasSpec(), "rectified": UniformSpec(), "fm_sigma_min": UniformSpec()}  # else log_snr
DETERMINISTIC = {
    "ddim": (DdimSpec(), 400),
    "euler": (EulerSpec(), 400),
    "heun": (HeunSpec(), 80),
    "dpmpp_2m": (Dpmpp2mSpec(), 80),
    "rf_euler": (RfEulerSpec(), 800),
    "rk45": (Rk45Spec(), 2),
}
STOCHASTIC = {
    "ddpm": (DdpmSpec(), 250),
    "ddim_eta1": (DdimSpec(eta=1.0), 250),
    "euler_maruyama": (EulerMaruyamaSpec(), 500),
    "heun_churn": (HeunSpec(s_churn=40.0, s_tmin=0.05, s_tmax=50.0, s_noise=1.0), 100),
}
# rectified-flow Euler integrates the path in its own time: VE's exponential sigma(t) needs many steps
STEPS = {("rf_euler", "ve"): 4000, ("ddim", "vp_linear"): 1000, ("euler", "vp_linear"): 1000}


def grid_for(process_name, process, steps):
    return GRID.get(process_name, LogSnrSpec()).build()(process, steps)


@pytest.mark.parametrize("solver", DETERMINISTIC)
@pytest.mark.parametrize("process", PROCESSES)
def test_ode_solvers_reproduce_mean_and_covariance(process, solver):
    """Started on the exact x_T of standardized points z, the end must be the PF-ODE's mu + s z:
    its mean and covariance equal those of mu + s z (to 1% / 3% of s), which are N(mu, s^2)'s."""
    p = PROCESSES[process].build()
    spec, steps = DETERMINISTIC[solver]
    den = GaussianDenoiser(p, MU, S)
    n = 2000
    z = RandomSource.from_seed(0, n).randn(4).double()
    ts = grid_for(process, p, STEPS.get((solver, process), steps))
    x = spec.build()(bind(den), p, den.ode_solution(z, ts[0]), ts, RandomSource.from_seed(1, n))
    exact = MU + S * z
    scale = S[:, None] * S[None, :]
    assert ((x.mean(0) - exact.mean(0)).abs() / S).max() < 0.01, (x.mean(0), exact.mean(0))
    assert ((torch.cov(x.T) - torch.cov(exact.T)).abs() / scale).max() < 0.03, (torch.cov(x.T), torch.cov(exact.T))
    # ... and those are the target's, up to sampling error (5 standard errors)
    assert ((x.mean(0) - MU).abs() / S).max() < 5 / math.sqrt(n) + 0.01
    assert ((torch.cov(x.T) - torch.diag(S**2)).abs() / scale).max() < 5 * math.sqrt(2 / n) + 0.03


@pytest.mark.parametrize("solver", STOCHASTIC)
@pytest.mark.parametrize("process", PROCESSES)
def test_stochastic_solvers_reproduce_mean_and_covariance(process, solver):
    p = PROCESSES[process].build()
    spec, steps = STOCHASTIC[solver]
    den = GaussianDenoiser(p, MU, S)
    n = 10000
    rng = RandomSource.from_seed(2, n)
    x = spec.build()(bind(den), p, p.prior((4,), rng).double(), grid_for(process, p, steps), rng)
    cov = torch.cov(x.T)
    mean_err = ((x.mean(0) - MU).abs() / S).max().item()
    cov_err = ((cov - torch.diag(S**2)).abs() / (S[:, None] * S[None, :])).max().item()
    # 5 standard errors of sampling noise plus a small allowance for discretization
    assert mean_err < 5 / math.sqrt(n) + 0.02, (x.mean(0), MU)
    assert cov_err < 5 * math.sqrt(2 / n) + 0.04, (cov, S**2)


def errors(solver_spec, process, grid, steps_list, seed=1):
    """Max error at the grid's last positive time against the closed-form PF-ODE solution."""
    den = GaussianDenoiser(process, MU, S)
    z = RandomSource.from_seed(seed, 256).randn(4).double()
    out = []
    for steps in steps_list:
        ts = grid.build()(process, steps)[:-1]  # stop at t_min: the order of the ODE steps alone
        x = solver_spec.build()(bind(den), process, den.ode_solution(z, ts[0]), ts, RandomSource.from_seed(0, 256))
        out.append((x - den.ode_solution(z, ts[-1])).abs().max().item())
    return out


@pytest.mark.parametrize(
    "solver,order", [(EulerSpec(), 1), (HeunSpec(), 2), (Dpmpp2mSpec(), 2)], ids=["euler", "heun", "dpmpp_2m"]
)
@pytest.mark.parametrize(
    "process,grid", [(EdmProcessSpec(), KarrasSpec()), (VpLinearSpec(timesteps=None), LogSnrSpec())], ids=["edm-karras", "vp-logsnr"]
)
def test_order_of_convergence(solver, order, process, grid):
    """Halving the step divides the error by 2^order (Euler 2, Heun and DPM-Solver++(2M) 4)."""
    errs = errors(solver, process.build(), grid, (20, 40, 80))
    ratios = [errs[0] / errs[1], errs[1] / errs[2]]
    lo, hi = (1.8, 2.2) if order == 1 else (3.5, 4.8)
    assert lo < ratios[-1] < hi, (errs, ratios)
    assert ratios[0] > lo * 0.9, (errs, ratios)


@pytest.mark.parametrize("process", ["vp_linear_cont", "edm", "rectified"])
def test_rk45_matches_the_analytic_pf_ode(process):
    p = {"vp_linear_cont": VpLinearSpec(timesteps=None), "edm": EdmProcessSpec(), "rectified": RectifiedSpec()}[process].build()
    den = GaussianDenoiser(p, MU, S)
    z = RandomSource.from_seed(3, 64).randn(4).double()
    ts = torch.tensor([p.t_max, 0.0], dtype=torch.float64)
    fn, calls = count_calls(bind(den))
    x, info = Rk45Spec(rtol=1e-8, atol=1e-8).build().solve(fn, p, den.ode_solution(z, ts[0]), ts)
    t_end = torch.tensor(p.t_min, dtype=torch.float64)
    # the ODE part ends at t_min; the final denoising step is exact for Gaussian data at t_min's shrinkage
    want = den(den.ode_solution(z, t_end), t_end.reshape(1)).x0 if p.t_min > 0 else den.ode_solution(z, t_end)
    assert (x - want).abs().max().item() < 1e-5
    assert info.nfe == calls[0] and info.nfe > 10 and info.steps > 1


class TwoGaussians(nn.Module):
    """Exact denoisers of N(mu_c, s^2) for labels c = 0 and 1 (1 is the null condition)."""

    def __init__(self, process, mus):
        super().__init__()
        self.each = nn.ModuleList(GaussianDenoiser(process, m, S) for m in mus)

    def forward(self, x, t, cond):
        preds = [d(x, t) for d in self.each]
        pick = cond["label"].reshape(-1, 1).bool()
        return Prediction(
            x, preds[0].alpha, preds[0].sigma,
            torch.where(pick, preds[1].x0, preds[0].x0), torch.where(pick, preds[1].eps, preds[0].eps),
        )


@pytest.mark.parametrize("solver", {**DETERMINISTIC, **STOCHASTIC})
def test_guidance_reaches_the_guided_gaussian_through_every_solver(solver):
    """For Gaussians of equal covariance, (1 + w) D(x; c) - w D(x; null) is the exact denoiser of
    N((1 + w) mu_c - w mu_null, s^2): every solver, given the guidance through bind(), must land there
    (with cond and null in one batched call of twice the rows)."""
    p = VpLinearSpec(timesteps=None).build()
    w, mu_null = 2.0, torch.tensor([1.0, 0.0, 0.5, 0.0], dtype=torch.float64)
    den = TwoGaussians(p, [MU, mu_null])
    spec, steps = {**DETERMINISTIC, **STOCHASTIC}[solver]
    steps = min(steps, 100)  # coarser than above: the allowance below is wider
    n = 2000
    rng = RandomSource.from_seed(4, n)
    rows = []
    fn = bind(lambda x, t, c: (rows.append(len(x)), den(x, t, c))[1],
              {"label": torch.zeros(n, dtype=torch.long)}, {"label": torch.ones(n, dtype=torch.long)}, guidance=w)
    x = spec.build()(fn, p, p.prior((4,), rng).double(), LogSnrSpec().build()(p, steps), rng)
    target = (1 + w) * MU - w * mu_null
    assert set(rows) == {2 * n}
    assert ((x.mean(0) - target).abs() / S).max() < 5 / math.sqrt(n) + 0.03, (x.mean(0), target)
    assert ((x.std(0) - S).abs() / S).max() < 5 / math.sqrt(2 * n) + 0.05, (x.std(0), S)


def test_nfe_per_solver():
    """Heun: 2N - 1 (EDM: 18 steps = 35 NFE); Euler, DPM-Solver++(2M), DDIM: N."""
    p = EdmProcessSpec().build()
    den = GaussianDenoiser(p, MU, S)
    ts = KarrasSpec().build()(p, 18)
    for spec, nfe in ((HeunSpec(), 35), (EulerSpec(), 18), (Dpmpp2mSpec(), 18), (DdimSpec(), 18)):
        fn, calls = count_calls(bind(den))
        spec.build()(fn, p, torch.zeros(2, 4, dtype=torch.float64), ts, RandomSource.from_seed(0, 2))
        assert calls[0] == nfe, spec


@pytest.mark.parametrize("process", PROCESSES)
def test_euler_is_ddim_and_rf_euler_on_the_straight_path(process):
    """EDM-form Euler = deterministic DDIM on every process (Song et al. 2021, section 4.3); on the
    rectified path (sigma_min = 0) it is also the rectified-flow Euler step."""
    p = PROCESSES[process].build()
    den = GaussianDenoiser(p, MU, S)
    ts = grid_for(process, p, 12)
    x = p.prior((4,), RandomSource.from_seed(5, 64)).double()
    run = lambda spec: spec.build()(bind(den), p, x, ts, RandomSource.from_seed(0, 64))  # noqa: E731
    torch.testing.assert_close(run(EulerSpec()), run(DdimSpec()), rtol=1e-9, atol=1e-9)
    if process == "rectified":
        torch.testing.assert_close(run(EulerSpec()), run(RfEulerSpec()), rtol=1e-9, atol=1e-9)


def test_churn_is_reproducible_per_seed_and_zero_churn_is_deterministic():
    p = EdmProcessSpec().build()
    den = GaussianDenoiser(p, MU, S)
    ts = KarrasSpec().build()(p, 10)
    spec = HeunSpec(s_churn=10.0)

    def sample(seeds):
        rng = RandomSource.from_seeds(seeds)
        return spec.build()(bind(den), p, p.prior((4,), rng).double(), ts, rng)

    torch.testing.assert_close(sample([(7, 2)]), sample([(5, 3), (7, 2)])[3:])
    assert not torch.equal(sample([(7, 2)]), sample([(8, 2)]))
    rng = RandomSource.from_seed(0, 3)
    x = p.prior((4,), rng).double()
    a = HeunSpec().build()(bind(den), p, x, ts, RandomSource.from_seed(1, 3))
    b = HeunSpec().build()(bind(den), p, x, ts, RandomSource.from_seed(2, 3))
    torch.testing.assert_close(a, b, rtol=0, atol=0)
