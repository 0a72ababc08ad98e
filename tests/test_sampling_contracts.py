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
from components.noise import EdmSpec, RectifiedSpec, VpCosineSpec, VpLinearSpec
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
    "edm": EdmSpec(),
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
