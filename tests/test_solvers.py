"""Solvers checked against the truth: with the exact denoiser of Gaussian data N(mu, s^2 I),
DDPM ancestral and DDIM (eta = 0 and 1) must reproduce the data's mean and variance, and
deterministic DDIM must follow the closed-form probability-flow ODE trajectory."""

from __future__ import annotations

import pytest
import torch

from components.denoisers import bind
from components.grids import UniformSpec
from components.noise import VpCosineSpec, VpLinearSpec
from components.random import RandomSource
from components.solvers import DdimSpec, DdpmSpec
from zoo.testing import GaussianDenoiser

MU = torch.tensor([1.5, -0.5, 0.0, 0.25])
S = 0.4
N = 20000  # samples per dimension of MU
COPIES = 20  # N samples as N / COPIES rows of COPIES independent copies of MU: the same N draws
# per dimension (the same statistical power), with 20x less of the per-row work of the solvers

pytestmark = pytest.mark.usefixtures("one_thread")  # elementwise ops on small tensors


def run(process_spec, solver_spec, steps, seed=0, n=N, copies=1):
    """``n`` rows of ``copies`` x len(MU) dimensions, each copy of MU an independent dimension."""
    process = process_spec.build()
    mu = MU.repeat(copies)
    den = GaussianDenoiser(process, mu, S)
    rng = RandomSource.from_seed(seed, n)
    x = process.prior((len(mu),), rng)
    ts = UniformSpec().build()(process, steps)
    return solver_spec.build()(bind(den), process, x, ts, rng)


@pytest.mark.heavy
@pytest.mark.parametrize("process", [VpLinearSpec(), VpCosineSpec(), VpLinearSpec(timesteps=None)], ids=["linear", "cosine", "linear-cont"])
@pytest.mark.parametrize(
    "solver,steps",
    [(DdpmSpec(), 1000), (DdpmSpec(variance="large"), 1000), (DdimSpec(eta=0.0), 100), (DdimSpec(eta=1.0), 1000)],
    ids=["ddpm-small", "ddpm-large", "ddim0", "ddim1"],
)
def test_reproduces_gaussian_data(process, solver, steps):
    x = run(process, solver, steps, n=N // COPIES, copies=COPIES).reshape(-1, len(MU))  # N x len(MU)
    assert x.shape == (N, len(MU))
    se_mean = S / N**0.5  # standard error of the sample mean
    se_std = S / (2 * N) ** 0.5
    mean_err = (x.mean(0) - MU).abs().max().item()
    std_err = (x.std(0) - S).abs().max().item()
    # 5 standard errors of sampling noise plus a small allowance for discretization
    assert mean_err < 5 * se_mean + 0.01, f"mean {x.mean(0).tolist()} vs {MU.tolist()}"
    assert std_err < 5 * se_std + 0.01, f"std {x.std(0).tolist()} vs {S}"


def test_ddim_converges_to_the_probability_flow_ode_at_first_order():
    """eta = 0 DDIM tracks the closed-form PF-ODE trajectory; halving the step halves the error."""
    process = VpLinearSpec(timesteps=None).build()
    den = GaussianDenoiser(process, MU, S)
    errs = []
    for steps in (100, 200, 400):
        rng = RandomSource.from_seed(1, 256)
        ts = UniformSpec().build()(process, steps)
        z = rng.randn(len(MU)).double()
        x0 = DdimSpec().build()(bind(den), process, den.ode_solution(z, ts[0]), ts, rng)
        errs.append((x0 - den.ode_solution(z, torch.tensor(0.0))).abs().max().item())
    ratios = [errs[0] / errs[1], errs[1] / errs[2]]
    assert all(1.8 < r < 2.2 for r in ratios), (errs, ratios)
    assert errs[-1] < 0.02


def test_same_seed_same_samples_and_groups_are_independent():
    a = run(VpLinearSpec(), DdimSpec(eta=1.0), 20, seed=3, n=8)
    b = run(VpLinearSpec(), DdimSpec(eta=1.0), 20, seed=3, n=8)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    # a request's samples do not depend on what it is batched with
    process = VpLinearSpec().build()
    den = GaussianDenoiser(process, MU, S)
    ts = UniformSpec().build()(process, 20)

    def sample(seeds):
        rng = RandomSource.from_seeds(seeds)
        return DdimSpec(eta=1.0).build()(bind(den), process, process.prior((4,), rng), ts, rng)

    alone = sample([(7, 2)])
    batched = sample([(5, 3), (7, 2)])
    torch.testing.assert_close(batched[3:], alone, rtol=1e-6, atol=1e-6)


def test_ddim_eta1_equals_ddpm_small_in_distribution_of_one_step():
    """Same posterior mean and variance: with the same noise the two agree exactly."""
    a = run(VpLinearSpec(), DdimSpec(eta=1.0), 50, seed=4, n=64)
    b = run(VpLinearSpec(), DdpmSpec(), 50, seed=4, n=64)
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_grid_snaps_to_the_chain_and_ends_at_zero():
    process = VpLinearSpec().build()
    ts = UniformSpec().build()(process, 50)
    assert len(ts) == 51 and ts[0] == 1.0 and ts[-1] == 0.0
    k = ts[:-1] * 1000
    torch.testing.assert_close(k, k.round())
    full = UniformSpec().build()(process, 1000)
    torch.testing.assert_close(full[:-1] * 1000, torch.arange(1000, 0, -1, dtype=torch.float64))
    with pytest.raises(ValueError, match="exceeds"):
        UniformSpec().build()(process, 1001)
