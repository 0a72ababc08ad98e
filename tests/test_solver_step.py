"""The one-step form of the solvers (DESIGN.md 2b) and the registry's lookup API.

Every solver with ``has_step`` takes each row from its own t to its own s; the grid loop is
built on it. Checked against the truth where one exists (the exact PF-ODE of Gaussian data),
and against itself: a batch at per-row times equals each row's own single-row call.
"""

from __future__ import annotations

import pytest
import torch

from components import conditioners, denoisers, grids, noise, objectives, solvers
from components.denoisers import bind
from components.grids import UniformSpec
from components.noise import EdmProcessSpec, RectifiedSpec, VpLinearSpec
from components.random import RandomSource
from components.solvers import SOLVERS
from zoo.testing import GaussianDenoiser

MU = torch.tensor([1.5, -0.5, 0.0, 0.25], dtype=torch.float64)
S = 0.4
STEPPERS = [cls() for cls in SOLVERS.members() if cls.has_step]
PROCESSES = [VpLinearSpec(timesteps=None), EdmProcessSpec(), RectifiedSpec()]


def test_the_registry_knows_which_solvers_step():
    assert {s.kind for s in STEPPERS} >= {"ddim", "euler", "heun", "rf_euler"}
    for cls in SOLVERS.members():
        assert hasattr(cls.build(cls()), "step") == cls.has_step, cls.__name__
    assert not SOLVERS.member("dpmpp_2m").has_step and not SOLVERS.member("rk45").has_step


@pytest.mark.parametrize("process_spec", PROCESSES, ids=lambda p: p.kind)
@pytest.mark.parametrize("spec", STEPPERS, ids=lambda s: s.kind)
def test_per_row_times_equal_each_rows_own_call(spec, process_spec):
    process = process_spec.build()
    den = bind(GaussianDenoiser(process, MU, S))
    solver = spec.build()
    n = 5
    lo, hi = max(process.t_min, 1e-3 * process.t_max), process.t_max
    t = torch.tensor([hi, 0.7 * hi, 0.3 * hi + 0.7 * lo, 0.05 * hi + lo, 2 * lo], dtype=torch.float64)
    s = torch.tensor([0.5 * hi, 0.0, lo, lo, 0.0], dtype=torch.float64)  # clean ends mixed in
    x = torch.randn(n, len(MU), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    rows = [(i, 1) for i in range(n)]
    batch = solver.step(den, process, x, t, s, RandomSource.from_seeds(rows))
    for i in range(n):
        one = solver.step(den, process, x[i : i + 1], t[i : i + 1], s[i : i + 1], RandomSource.from_seeds([(i, 1)]))
        torch.testing.assert_close(batch[i : i + 1], one, rtol=1e-12, atol=1e-12, msg=f"row {i} ({spec.kind})")
        assert torch.isfinite(one).all()


@pytest.mark.parametrize("spec", STEPPERS, ids=lambda s: s.kind)
def test_grid_loop_equals_steps_on_a_shared_grid(spec):
    process = VpLinearSpec().build()
    den = bind(GaussianDenoiser(process, MU.float(), S))
    ts = UniformSpec().build()(process, 6)
    x = process.prior((len(MU),), RandomSource.from_seed(1, 8))
    loop = spec.build()(den, process, x, ts, RandomSource.from_seed(2, 8))
    rng = RandomSource.from_seed(2, 8)
    y = x
    for t, s in zip(ts[:-1], ts[1:]):
        y = spec.build().step(den, process, y, t.expand(8), s.expand(8), rng)
    torch.testing.assert_close(loop, y, rtol=0, atol=0)


def test_deterministic_one_steps_follow_the_exact_ode():
    """Gaussian data: the PF-ODE is closed-form, so each row's one step from t to s (rows at
    different levels) lands near the exact x_s: DDIM = Euler at first order, Heun at second."""
    process = EdmProcessSpec().build()
    g = GaussianDenoiser(process, MU, S)
    z = torch.randn(6, len(MU), generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    t = torch.tensor([10.0, 5.0, 2.0, 1.0, 0.5, 0.2], dtype=torch.float64)
    s = t * 0.9
    x_t = torch.stack([g.ode_solution(z[i], t[i]) for i in range(6)])
    exact = torch.stack([g.ode_solution(z[i], s[i]) for i in range(6)])
    err = {}
    for kind in ("ddim", "euler", "heun"):
        got = SOLVERS.parse(kind).build().step(bind(g), process, x_t, t, s, RandomSource.from_seed(0, 6))
        err[kind] = (got - exact).abs().max().item()
    assert err["ddim"] == pytest.approx(err["euler"], rel=1e-9), err
    assert err["euler"] < 2e-2 and err["heun"] < err["euler"] / 5, err


def test_traits_decide_determinism():
    assert SOLVERS.parse("ddim").deterministic and not SOLVERS.parse({"kind": "ddim", "eta": 1.0}).deterministic
    assert not SOLVERS.parse({"kind": "euler", "s_churn": 10}).deterministic
    assert not SOLVERS.parse("ddpm").deterministic and not SOLVERS.parse("euler_maruyama").deterministic


@pytest.mark.parametrize(
    "registry", [solvers.SOLVERS, objectives.OBJECTIVES, denoisers.DENOISERS, noise.PROCESSES, grids.GRIDS,
                 conditioners.CONDITIONERS], ids=lambda r: r.family)
def test_every_union_parses_its_kinds(registry):
    kinds = registry.kinds()
    assert len(kinds) == len(set(kinds)) == len(registry.members())
    for kind in registry.default_kinds():
        spec = registry.parse(kind)
        assert spec.kind == kind and registry.parse(spec.model_dump()) == spec
    with pytest.raises(ValueError, match=f"unknown {registry.family} kind 'nope'"):
        registry.parse("nope")


def test_conditioners_say_what_they_take():
    for cls in conditioners.CONDITIONERS.members():
        assert cls.takes in ("none", "label", "prompt"), cls.__name__


def test_a_shared_time_stays_one_time_and_gives_the_per_row_result():
    """A grid's time expanded over the rows stays one time through model_t (float32 too), so
    per_time computes it once; the exact denoiser then gives what it gives for per-row times."""
    from components.solvers.base import model_t

    process = VpLinearSpec().build()
    t = torch.tensor(0.37, dtype=torch.float64).expand(6)
    for dtype in (torch.float32, torch.float64):
        x = torch.randn(6, len(MU), generator=torch.Generator().manual_seed(3)).to(dtype)
        shared = model_t(t, x)
        assert shared.stride(0) == 0 and shared.dtype == dtype and torch.equal(shared, t.to(dtype).contiguous())
        den = GaussianDenoiser(process, MU, S)
        one, rows = den(x, shared), den(x, shared.contiguous())
        for field in ("alpha", "sigma", "x0", "eps"):
            a, b = getattr(one, field), getattr(rows, field)
            assert a.shape == b.shape and torch.equal(a, b), field
