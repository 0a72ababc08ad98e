"""Rectified flow, reflow and flow matching on a 2-D toy and against their formulas.

Two moons (Liu et al. 2022, section 5.1's toy setting): 2-rectified flow, trained on the
(noise, sample) pairs of 1-rectified flow and initialized from it, is straighter (the straightness
measure of the RF paper drops) and its one-step Euler samples are far closer to the data (sliced
Wasserstein) than 1-rectified flow's. The objectives' targets, the OT coupling and k-step
distillation are checked against their definitions."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import nn

from components.denoisers import Denoiser, VelocitySpec, bind
from components.grids import UniformSpec
from components.noise import RectifiedSpec
from components.objectives import FlowMatchingSpec, RectifiedFlowSpec, RfDistillSpec
from components.objectives.flow_matching import ot_pairing
from components.random import RandomSource
from components.solvers import Dpmpp2mSpec, RfEulerSpec
from zoo.metrics import sliced_wasserstein, straightness

pytestmark = pytest.mark.usefixtures("one_thread")


class MLP(nn.Module):
    """A velocity backbone for 2-D points: (x, c_noise) -> R^2."""

    def __init__(self, width: int = 64):
        super().__init__()
        self.freqs = torch.arange(1, 9, dtype=torch.float32) * math.pi
        self.net = nn.Sequential(nn.Linear(2 + 16, width), nn.SiLU(), nn.Linear(width, width), nn.SiLU(),
                                 nn.Linear(width, width), nn.SiLU(), nn.Linear(width, 2))

    def forward(self, x, c_noise, cond=None):
        tau = (c_noise.float() / 999)[:, None] * self.freqs
        return self.net(torch.cat([x.float(), tau.sin(), tau.cos()], 1)).to(x.dtype)


def moons(n: int, seed: int) -> torch.Tensor:
    from sklearn.datasets import make_moons

    x, _ = make_moons(n, noise=0.05, random_state=seed)
    return torch.as_tensor((x - [0.5, 0.25]) / [0.9, 0.5], dtype=torch.float32)  # ~ unit scale


def fit(den: Denoiser, objective, data: dict, steps: int, seed: int, batch: int = 512, lr: float = 3e-3) -> None:
    torch.manual_seed(seed)
    opt = torch.optim.Adam(den.parameters(), lr=lr)
    n = len(data["x0"])
    for step in range(steps):
        idx = torch.randint(0, n, (batch,))
        b = {k: v[idx] for k, v in data.items()}
        loss, _ = objective.loss(den, {**b, "cond": None}, RandomSource.from_seed(seed * 100_000 + step, batch), step)
        opt.zero_grad()
        loss.backward()
        opt.step()


@torch.no_grad()
def sample(den: Denoiser, eps: torch.Tensor, steps: int, solver=RfEulerSpec()) -> torch.Tensor:
    p = den.process
    return solver.build()(bind(den), p, eps, UniformSpec().build()(p, steps), RandomSource.from_seed(0, len(eps)))


@pytest.fixture(scope="module")
def flows():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # (module fixtures run before the one_thread fixture)
    try:
        process = RectifiedSpec().build()
        rf1 = Denoiser(MLP(), process, VelocitySpec().build())
        fit(rf1, RectifiedFlowSpec().build(), {"x0": moons(8192, 0)}, steps=800, seed=1)
        # reflow: the 1-RF's ODE couples noise and samples (Liu et al. Algorithm 1)
        eps = RandomSource.from_seed(7, 4096).randn(2)
        pairs = {"x0": sample(rf1, eps, 32, Dpmpp2mSpec()), "noise": eps}
        rf2 = Denoiser(MLP(), process, VelocitySpec().build())
        rf2.load_state_dict(rf1.state_dict())
        fit(rf2, RectifiedFlowSpec(coupling="pairs").build(), pairs, steps=500, seed=2, lr=1e-3)
    finally:
        torch.set_num_threads(threads)
    return rf1, rf2, pairs


@pytest.mark.heavy
def test_reflow_straightens_the_flow_and_one_step_samples_improve(flows):
    rf1, rf2, _ = flows
    data = moons(4096, 123)
    eps = RandomSource.from_seed(11, 4096).randn(2)
    sw1, sw2 = (sliced_wasserstein(sample(m, eps, 1), data) for m in (rf1, rf2))
    sw_many = sliced_wasserstein(sample(rf1, eps, 64, Dpmpp2mSpec()), data)
    grid = UniformSpec().build()(rf1.process, 64)
    s1, s2 = (straightness(bind(m), m.process, eps, grid) for m in (rf1, rf2))
    msg = f"1-step SW: 1-RF {sw1:.3f}, 2-RF {sw2:.3f} (1-RF with 64 steps {sw_many:.3f}); straightness 1-RF {s1:.4f}, 2-RF {s2:.4f}"
    print(msg)
    assert sw2 < 0.5 * sw1, msg
    assert s2 < 0.5 * s1, msg
    assert sw_many < sw1, "the 1-RF itself must be a good flow when integrated finely: " + msg


@pytest.mark.heavy
def test_distilled_one_step_map_fits_the_pairs(flows):
    """k = 1 distillation (rf_distill) trains only at t = 1: x0 = eps - v(eps, 1) on the pairs."""
    _, rf2, pairs = flows
    distilled = Denoiser(MLP(), rf2.process, VelocitySpec().build())
    distilled.load_state_dict(rf2.state_dict())
    held = {k: v[-1024:] for k, v in pairs.items()}
    train = {k: v[:-1024] for k, v in pairs.items()}
    before = (sample(distilled, held["noise"], 1) - held["x0"]).pow(2).sum(1).mean().item()
    fit(distilled, RfDistillSpec(steps=1).build(), train, steps=300, seed=3, lr=1e-3)
    after = (sample(distilled, held["noise"], 1) - held["x0"]).pow(2).sum(1).mean().item()
    assert after < 0.7 * before, (before, after)


class Spy(nn.Module):
    """Records the backbone's inputs and returns zeros."""

    def forward(self, x, c_noise, cond=None):
        self.x, self.c_noise = x, c_noise
        return torch.zeros_like(x)


def test_rectified_flow_regresses_eps_minus_x0():
    """With v_hat = 0 the loss is E||eps - x0||^2 (per dimension), x_t = (1 - t) x0 + t eps."""
    process = RectifiedSpec().build()
    spy = Spy()
    den = Denoiser(spy, process, VelocitySpec().build())
    x0 = torch.randn(512, 3)
    rng = RandomSource.from_seed(0, 512)
    loss, _ = RectifiedFlowSpec().build().loss(den, {"x0": x0, "cond": None}, rng, 0)
    again = RandomSource.from_seed(0, 512)
    t, eps = process.sample_t(again), again.randn(3)
    torch.testing.assert_close(spy.x, (1 - t)[:, None] * x0 + t[:, None] * eps)
    torch.testing.assert_close(loss, (eps - x0).pow(2).mean())
    paired = RectifiedFlowSpec(coupling="pairs").build()
    loss, _ = paired.loss(den, {"x0": x0, "noise": eps, "cond": None}, RandomSource.from_seed(0, 512), 0)
    torch.testing.assert_close(loss, (eps - x0).pow(2).mean())
    with pytest.raises(ValueError, match="no 'noise' column"):
        paired.loss(den, {"x0": x0, "cond": None}, rng, 0)


def test_flow_matching_target_is_lipmans_field():
    """On the sigma_min path the regressed velocity is (1 - sigma_min) eps - x0 (Lipman eq. 23)."""
    smin = 0.05
    den = Denoiser(Spy(), RectifiedSpec(sigma_min=smin).build(), VelocitySpec().build())
    x0 = torch.randn(256, 2)
    loss, _ = FlowMatchingSpec(coupling="independent").build().loss(den, {"x0": x0, "cond": None}, RandomSource.from_seed(0, 256), 0)
    again = RandomSource.from_seed(0, 256)
    again.rand()
    eps = again.randn(2)
    torch.testing.assert_close(loss, ((1 - smin) * eps - x0).pow(2).mean())


def test_ot_pairing_is_the_exact_minimum_cost_permutation():
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(6, 2, generator=g), torch.randn(6, 2, generator=g)
    perm = ot_pairing(x0, eps)
    cost = lambda p: (x0 - eps[list(p)]).pow(2).sum().item()  # noqa: E731
    best = min(itertools.permutations(range(6)), key=cost)
    assert cost(perm.tolist()) == pytest.approx(cost(best))
    assert sorted(perm.tolist()) == list(range(6))
    # the coupling shortens the paths against independent pairing on a large batch
    x0, eps = moons(512, 1), torch.randn(512, 2, generator=g)
    assert (x0 - eps[ot_pairing(x0, eps)]).pow(2).sum(1).mean() < 0.5 * (x0 - eps).pow(2).sum(1).mean()


def test_rf_distill_trains_only_at_the_k_step_grid_times():
    den = Denoiser(Spy(), RectifiedSpec().build(), VelocitySpec().build())
    batch = {"x0": torch.randn(400, 2), "noise": torch.randn(400, 2), "cond": None}
    RfDistillSpec(steps=4).build().loss(den, batch, RandomSource.from_seed(0, 400), 0)
    t = den.backbone.c_noise / 999
    assert sorted(set(t.round(decimals=4).tolist())) == [0.25, 0.5, 0.75, 1.0]
