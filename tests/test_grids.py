"""Time grids: their formulas, diffusers' spacings and EDM's sigmas as peers, and on every process
steps + 1 strictly decreasing times from t_max ending at the clean end 0."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from components.grids import KarrasSpec, LeadingSpec, LogSnrSpec, QuadraticSpec, TrailingSpec, UniformSpec
from components.noise import EdmProcessSpec, RectifiedSpec, VeSpec, VpCosineSpec, VpLinearSpec

pytestmark = pytest.mark.usefixtures("one_thread")

PROCESSES = {
    "vp_linear": VpLinearSpec(),
    "vp_cosine_cont": VpCosineSpec(timesteps=None),
    "ve": VeSpec(),
    "edm": EdmProcessSpec(),
    "rectified": RectifiedSpec(),
}
GRIDS = {
    "uniform": UniformSpec(),
    "quadratic": QuadraticSpec(),
    "karras": KarrasSpec(),
    "log_snr": LogSnrSpec(),
    "leading": LeadingSpec(),
    "trailing": TrailingSpec(),
}
# rectified flow's ends are infinite in sigma and log-SNR, and leading spacing would end at t = 0
RECTIFIED = {"karras": KarrasSpec(sigma_max=80.0), "log_snr": LogSnrSpec(log_snr_min=-10.0, log_snr_max=10.0)}


@pytest.mark.parametrize("grid", GRIDS)
@pytest.mark.parametrize("process", PROCESSES)
def test_every_grid_on_every_process(grid, process):
    p = PROCESSES[process].build()
    spec = RECTIFIED.get(grid, GRIDS[grid]) if process == "rectified" else GRIDS[grid]
    if process == "rectified" and grid == "leading":
        with pytest.raises(ValueError, match="leading grid ends at t_min = 0"):
            spec.build()(p, 10)
        return
    for steps in (1, 2, 10, 37):
        ts = spec.build()(p, steps)
        assert len(ts) == steps + 1 and ts[-1] == 0
        assert (ts[1:] < ts[:-1]).all(), ts
        assert ts[0] <= p.t_max + 1e-9 and ts[-2] >= p.t_min - 1e-9
    if grid in ("uniform", "karras", "log_snr", "trailing", "quadratic") and process != "rectified":
        assert ts[0] == pytest.approx(p.t_max, rel=1e-6), "these grids start at t_max"


def test_uniform_on_rectified_flow_is_n_equal_euler_steps():
    ts = UniformSpec().build()(RectifiedSpec().build(), 4)
    torch.testing.assert_close(ts, torch.tensor([1.0, 0.75, 0.5, 0.25, 0.0], dtype=torch.float64))


def test_karras_is_eq_5_and_edms_sigmas():
    """Karras et al. eq. 5 on the EDM process, and diffusers' EDMEulerScheduler sigmas (karras, rho 7)."""
    p = EdmProcessSpec().build()
    ts = KarrasSpec().build()(p, 18)
    i = torch.arange(18, dtype=torch.float64)
    want = (80 ** (1 / 7) + i / 17 * (0.002 ** (1 / 7) - 80 ** (1 / 7))) ** 7
    torch.testing.assert_close(ts[:-1], want)
    diffusers = pytest.importorskip("diffusers")
    sched = diffusers.EDMEulerScheduler(sigma_min=0.002, sigma_max=80.0, rho=7.0, sigma_schedule="karras")
    sched.set_timesteps(18)
    torch.testing.assert_close(ts.float(), sched.sigmas.float(), rtol=1e-5, atol=1e-6)


def test_karras_on_a_vp_chain_lays_edm_sigmas_on_its_time():
    p = VpLinearSpec().build()
    ts = KarrasSpec(sigma_min=0.02, sigma_max=80.0).build()(p, 10)
    s = p.ve_sigma(ts[:-1])
    torch.testing.assert_close(s[[0, -1]], torch.tensor([80.0, 0.02], dtype=torch.float64), rtol=1e-6, atol=0)
    k = (s ** (1 / 7)).diff()
    torch.testing.assert_close(k, k.mean().expand_as(k), rtol=1e-6, atol=0)  # equal steps in s^(1/rho)


def test_log_snr_is_uniform_in_log_snr():
    p = VpLinearSpec(timesteps=None).build()
    lam = p.log_snr(LogSnrSpec().build()(p, 12)[:-1])
    torch.testing.assert_close(lam.diff(), lam.diff().mean().expand(11), rtol=1e-6, atol=1e-9)
    ends = p.log_snr(torch.tensor([p.t_max, p.t_min], dtype=torch.float64))
    torch.testing.assert_close(lam[[0, -1]], ends)


def test_quadratic_is_ddims_quadratic_and_distinct_on_a_chain():
    p = VpLinearSpec(timesteps=None).build()
    ts = QuadraticSpec().build()(p, 5)[:-1]
    u = torch.linspace(1, 0, 5, dtype=torch.float64)
    torch.testing.assert_close(ts, p.t_min + (p.t_max - p.t_min) * u**2)
    chain = QuadraticSpec().build()(VpLinearSpec().build(), 100)[:-1] * 1000
    torch.testing.assert_close(chain, chain.round())
    assert chain[-1] == 1 and (chain.diff() < 0).all(), "collisions at the dense end are pushed apart"


@pytest.mark.parametrize("steps", [10, 25, 50, 333])
def test_spacings_equal_diffusers(steps):
    """Peer: DDIMScheduler.timesteps (0-based = t T - 1) for timestep_spacing leading (with
    Stable Diffusion's steps_offset = 1), trailing and linspace (our uniform)."""
    diffusers = pytest.importorskip("diffusers")
    p = VpLinearSpec().build()
    for spacing, spec, offset in (("leading", LeadingSpec(offset=1), 1), ("trailing", TrailingSpec(), 0), ("linspace", UniformSpec(), 0)):
        sched = diffusers.DDIMScheduler(num_train_timesteps=1000, timestep_spacing=spacing, steps_offset=offset)
        sched.set_timesteps(steps)
        ours = (spec.build()(p, steps)[:-1] * 1000 - 1).round().long()
        np.testing.assert_array_equal(ours.numpy(), sched.timesteps.numpy(), err_msg=spacing)


def test_grid_errors_name_the_problem():
    rf = RectifiedSpec().build()
    with pytest.raises(ValueError, match="give the grid a finite sigma_max"):
        KarrasSpec().build()(rf, 10)
    with pytest.raises(ValueError, match="finite log_snr_min"):
        LogSnrSpec().build()(rf, 10)
    with pytest.raises(ValueError, match="exceeds the process"):
        KarrasSpec(sigma_max=500.0).build()(EdmProcessSpec().build(), 10)
    with pytest.raises(ValueError, match="exceeds the 1000 steps"):
        QuadraticSpec().build()(VpLinearSpec().build(), 1001)
    with pytest.raises(ValueError, match="past the chain"):
        LeadingSpec(offset=200).build()(VpLinearSpec().build(), 5)
