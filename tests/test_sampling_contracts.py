"""Contracts every solver and every grid of the registry keeps (iterated from the unions, so a
new member is checked without editing this file):

- a sample depends only on its own seed, not on what it is batched with: rows of a 3-sample
  per-seed call equal the same rows of a 5-sample call (the README's serving promise);
- every grid starts at t_max for every step count (a 1-step sample from pure noise starts at
  pure noise), unless the grid's ``starts_below_t_max`` says why not.
"""

from __future__ import annotations

import typing

import pytest
import torch

import zoo
from components.grids import GridSpec
from components.noise import EdmProcessSpec, RectifiedSpec, VpCosineSpec, VpLinearSpec
from components.solvers import SolverSpec
from zoo.model import Model
from tests.conftest import tiny_overrides


def members(union) -> list[type]:
    return list(typing.get_args(typing.get_args(union)[0]))


SOLVERS = {cls.model_fields["kind"].default: cls for cls in members(SolverSpec)}
GRIDS = {cls.model_fields["kind"].default: cls for cls in members(GridSpec)}


@pytest.fixture(scope="module")
def tiny_model() -> Model:
    """An untrained tiny ddpm-digits network (fixed init): batch-independence is a property of
    the sampler, not of training."""
    torch.manual_seed(0)
    model = Model(zoo.get("ddpm-digits", **tiny_overrides()).model)
    return model.eval()


def test_the_registries_are_iterated():
    assert {"ddpm", "ddim", "rk45", "heun"} <= set(SOLVERS) and {"uniform", "karras"} <= set(GRIDS)


@pytest.mark.parametrize("kind", sorted(SOLVERS))
def test_rows_do_not_depend_on_their_batch(tiny_model, kind, one_thread):
    seeds = [7, 10, 11, 12, 8]
    five = tiny_model.sample(5, steps=4, solver=kind, grid="uniform", seed=seeds, return_latents=True)
    three = tiny_model.sample(3, steps=4, solver=kind, grid="uniform", seed=seeds[1:4], return_latents=True)
    assert torch.isfinite(five).all()
    torch.testing.assert_close(three, five[1:4], rtol=1e-5, atol=1e-5)


PROCESSES = {
    "vp_chain": VpLinearSpec(),
    "vp_cosine_chain": VpCosineSpec(),
    "vp_continuous": VpLinearSpec(timesteps=None),
    "edm": EdmProcessSpec(),
    "rectified": RectifiedSpec(),
}


@pytest.mark.parametrize("process", sorted(PROCESSES))
@pytest.mark.parametrize("kind", sorted(GRIDS))
def test_every_grid_starts_at_t_max(kind, process):
    spec, p = GRIDS[kind](), PROCESSES[process].build()
    if getattr(spec, "starts_below_t_max", False):
        pytest.skip(f"{kind}: {spec.starts_below_t_max}")
    for steps in (1, 2, 3, 10, 50):
        try:
            ts = spec.build()(p, steps)
        except ValueError as e:  # a grid that cannot run on this process says so
            assert kind in str(e) or "grid" in str(e)
            continue
        assert len(ts) == steps + 1 and float(ts[-1]) == 0.0
        assert float(ts[0]) == pytest.approx(p.t_max, rel=1e-9, abs=1e-12), (kind, process, steps, ts.tolist())


@pytest.mark.parametrize("process", ["rectified", "vp_continuous", "edm"])
def test_rk45_row_by_row_is_scipys_rk45(process):
    """Per-row step control is scipy's RK45 on each row: same NFE and steps, same end point."""
    import numpy as np
    from scipy.integrate import solve_ivp

    from components.denoisers import bind
    from components.random import RandomSource
    from components.solvers import Rk45Spec
    from components.solvers.base import at, derivative_at
    from zoo.testing import GaussianDenoiser

    p = PROCESSES[process].build()
    den = bind(GaussianDenoiser(p, torch.tensor([1.5, -0.5, 0.0, 0.25]), 0.4))
    x = RandomSource.from_seeds([(s, 1) for s in range(3)]).randn(4).double() * float(p.sigma(torch.tensor([p.t_max])))
    ts = torch.tensor([p.t_max, 0.0], dtype=torch.float64)
    ours, info = Rk45Spec(rtol=1e-4, atol=1e-4).build().solve(den, p, x, ts)
    for i in range(3):
        def f(t, y):
            xt = torch.from_numpy(y).reshape(1, 4)
            tt = torch.tensor(t, dtype=torch.float64)
            return den(xt, at(tt, xt)).velocity(*derivative_at(p, tt)).double().numpy().ravel()

        sol = solve_ivp(f, (p.t_max, p.t_min), x[i].numpy(), method="RK45", rtol=1e-4, atol=1e-4)
        alone, alone_info = Rk45Spec(rtol=1e-4, atol=1e-4).build().solve(den, p, x[i : i + 1], ts)
        end = torch.from_numpy(sol.y[:, -1]).reshape(1, 4)
        if p.t_min > 0:
            end = den(end, at(torch.tensor(p.t_min, dtype=torch.float64), end)).x0
        np.testing.assert_allclose(alone.numpy(), end.numpy(), rtol=0, atol=1e-12)
        assert alone_info.nfe == sol.nfev + (p.t_min > 0)
        torch.testing.assert_close(ours[i : i + 1], alone, rtol=0, atol=1e-12)
