"""Consistency training (CM Algorithm 3): its N(k) / mu(k) schedules, its target network, a run
resumed bit-identically, and learning Gaussian data without a teacher (closed form: the
consistency function of N(mu, S^2) data is linear, so one-step samples must have its mean and std)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from components.denoisers import ConsistencySpec, bind
from components.denoisers.base import Denoiser
from components.grids import KarrasSpec
from components.noise import EdmProcessSpec
from components.objectives import OBJECTIVES, CtSpec
from components.objectives.consistency_common import same_dropout
from components.random import RandomSource
from components.solvers import DdimSpec
from tests.test_distillation import MU, S, Mlp, data
from zoo.testing import GaussianDenoiser


def student():
    return Denoiser(Mlp(), EdmProcessSpec().build(), ConsistencySpec().build())


def ct(total_steps: int, **kw):
    obj = CtSpec(**kw).build()
    net = student()
    obj.attach(net, None, total_steps)
    return net, obj


def test_schedules_follow_cm_appendix_c():
    """CIFAR-10's s0 = 2, s1 = 150, mu0 = 0.9 over K = 800k: N grows from 2 to 151, mu from 0.9."""
    _, obj = ct(800_000)
    # by hand: N(K/2) = ceil(sqrt(0.5 (151^2 - 2^2) + 2^2) - 1) + 1 = ceil(105.78) + 1
    assert [obj.levels_at(k) for k in (0, 1_000, 200_000, 400_000, 799_999, 800_000)] == [2, 6, 76, 107, 151, 151]
    assert obj.mu_at(0) == pytest.approx(0.9, abs=1e-15)  # exp(s0 log mu0 / s0) = mu0
    for k in (0, 1_000, 200_000, 400_000, 800_000):  # the formulas, written out once more
        n = math.ceil(math.sqrt(k / 800_000 * (151**2 - 2**2) + 2**2) - 1) + 1
        assert obj.levels_at(k) == n
        assert obj.mu_at(k) == pytest.approx(0.9 ** (2 / n), rel=1e-12)
    assert obj.mu_at(800_000) == pytest.approx(0.998605469743606, rel=1e-12)
    ns = [obj.levels_at(k) for k in range(0, 800_001, 4_000)]
    assert ns == sorted(ns), "N(k) never decreases"
    assert "ct" in OBJECTIVES.kinds()


def test_spec_checks_its_fields():
    with pytest.raises(ValueError, match="s1"):
        CtSpec(s0=10, s1=5)
    with pytest.raises(ValueError, match="needs its weights"):
        CtSpec(distance="lpips")
    obj = CtSpec().build()
    with pytest.raises(ValueError, match="without a teacher"):
        obj.attach(student(), student(), 10)


def test_the_state_is_the_target_updated_at_mu_k():
    net, obj = ct(100, mu0=0.9)
    assert obj.state_dict() and all(k.startswith("target.") for k in obj.state_dict())
    loss, metrics = obj.loss(net, {"x0": data(0, 16)}, RandomSource.from_seed(0, 16), 0)
    loss.backward()
    assert torch.isfinite(loss) and metrics["levels"] == 2
    assert all(p.grad is not None for p in net.parameters())
    assert all(p.grad is None for p in obj.target.net.parameters()), "the target is under stop-gradient"
    before = {k: v.clone() for k, v in obj.target.net.state_dict().items()}
    with torch.no_grad():
        for p in net.parameters():
            p.add_(1.0)
    step = 60
    mu = obj.mu_at(step)
    assert mu == pytest.approx(math.exp(2 * math.log(0.9) / obj.levels_at(step)))
    obj.after_step(net, step)
    for k, v in obj.target.net.state_dict().items():
        torch.testing.assert_close(v, mu * before[k] + (1 - mu) * net.state_dict()[k])


def test_student_and_target_draw_the_same_dropout_masks():
    drop = nn.Dropout(0.5)
    x = torch.ones(1000)
    torch.manual_seed(0)
    with same_dropout(torch.device("cpu")):
        a = drop(x)
    b = drop(x)
    assert torch.equal(a, b) and (a == 0).any()


@pytest.mark.slow
def test_ct_one_step_samples_match_gaussian_data_without_a_teacher(one_thread):
    """2000 steps of CT (s0 = 2, s1 = 20, mu0 = 0.9, l2) on N([1, -0.5], diag([0.5, 0.25]^2)):
    one-step samples of the student vs one DDIM step of the EXACT denoiser (n = 20000). Measured
    (2026-12-01, loaded 2-core machine, 33 s): CT mean err 0.032, std err 0.099; 1-step DDIM std
    err 0.50; the untrained student's 1-step mean err 1.04, std err 0.49."""
    steps, batch = 2000, 256
    net, obj = ct(steps, s0=2, s1=20, mu0=0.9)
    process = net.process
    n = 20000
    rng = RandomSource.from_seed(123, n)
    x_T = process.prior((2,), rng)
    t_max = torch.full((n,), process.t_max)

    def errs(x):
        return (x.mean(0) - MU).abs().max().item(), (x.std(0) - S).abs().max().item()

    with torch.no_grad():
        untrained = errs(net(x_T, t_max).x0)
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    for step in range(steps):
        loss, _ = obj.loss(net, {"x0": data(step, batch)}, RandomSource.from_seed(step, batch), step)
        opt.zero_grad()
        loss.backward()
        opt.step()
        obj.after_step(net, step)
    with torch.no_grad():
        cm = errs(net(x_T, t_max).x0)
        ddim = errs(DdimSpec().build()(bind(GaussianDenoiser(process, MU, S)), process, x_T,
                                       KarrasSpec().build()(process, 1), rng))
    msg = (f"1-step CT: mean err {cm[0]:.4f}, std err {cm[1]:.4f}; untrained: {untrained[0]:.4f}, {untrained[1]:.4f}; "
           f"1-step DDIM (exact denoiser): {ddim[0]:.4f}, {ddim[1]:.4f}")
    print(msg)
    assert cm[0] < 0.06 and cm[1] < 0.15, msg
    assert cm[1] < ddim[1] / 3 and cm[1] < untrained[1] / 3, msg


@pytest.mark.slow
def test_a_ct_run_resumed_mid_way_is_bit_identical_target_network_included(tmp_path):
    """The whole loop in process (workers=0): a consistency ddpm-digits (with dropout) trained by
    CT for 6 steps; a copy of the run as it stood after step 4 (N(k) and mu(k) depend on the run's
    total steps, so the interrupted run is this one cut short) resumes and ends bit-identical, for
    the weights, their EMA and the target network theta^-."""
    import shutil
    from pathlib import Path

    import zoo
    from safetensors.torch import load_file

    from tests.conftest import tiny_overrides

    kw = tiny_overrides(steps=6, objective={"kind": "ct", "s0": 2, "s1": 10, "mu0": 0.9, "rho": 7.0, "distance": "l2",
                                            "huber_c": None},
                        denoiser={"kind": "consistency"}, **{"backbone.dropout": 0.1, "keep_checkpoints": 3})
    straight = zoo.train("ddpm-digits", output=str(tmp_path / "a"), progress=False, **kw)
    cut = tmp_path / "b" / Path(straight.dir).name
    shutil.copytree(straight.dir, cut)
    shutil.rmtree(cut / "checkpoints" / "step_00000006")
    resumed = zoo.train("ddpm-digits", output=str(tmp_path / "b"), progress=False, resume=str(cut), **kw)
    assert [m["step"] for m in resumed.metrics if m.get("event") == "resumed"] == [4]
    for name in ("model.safetensors", "ema.safetensors", "objective.safetensors"):
        a, b = load_file(f"{straight.checkpoint}/{name}"), load_file(f"{resumed.checkpoint}/{name}")
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    target, model = load_file(f"{straight.checkpoint}/objective.safetensors"), load_file(f"{straight.checkpoint}/model.safetensors")
    assert any(not torch.equal(target[k], model[k.removeprefix("target.net.")]) for k in target
               if k.removeprefix("target.net.") in model), "theta^- must be the EMA target, not the weights"
