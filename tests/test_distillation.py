"""Consistency distillation (CM Algorithm 2) checked in closed form: Gaussian data, the exact
denoiser as the teacher. The consistency function of N(mu, S^2) data is linear,
f(x, s) = mu + S / sqrt(S^2 + s^2) (x - mu), so a small CD-trained model's one-step samples must
have the data's mean and std, where one DDIM step from the same teacher collapses onto the mean."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from components.denoisers import ConsistencySpec, bind
from components.denoisers.base import Denoiser
from components.grids import KarrasSpec
from components.noise import EdmProcessSpec
from components.objectives import OBJECTIVES, CdSpec
from components.random import RandomSource
from components.solvers import DdimSpec
from zoo.testing import GaussianDenoiser

MU = torch.tensor([1.0, -0.5])
S = torch.tensor([0.5, 0.25])


class Mlp(nn.Module):
    def __init__(self, d: int = 2, width: int = 64):
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(d + 1, width), nn.SiLU(), nn.Linear(width, width), nn.SiLU(),
                                 nn.Linear(width, d))

    def forward(self, x, c_noise, cond=None):
        return self.net(torch.cat([x, c_noise.reshape(-1, 1).to(x.dtype)], 1))


def setup(**kw):
    process = EdmProcessSpec().build()
    teacher = GaussianDenoiser(process, MU, S)
    student = Denoiser(Mlp(), process, ConsistencySpec().build())
    obj = CdSpec(**kw).build()
    obj.attach(student, teacher, total_steps=100)
    return process, teacher, student, obj


def data(step: int, n: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(10_000 + step)
    return MU + S * torch.randn(n, 2, generator=g)


def test_cd_state_is_the_target_and_ema_is_exact():
    _, _, student, obj = setup(mu=0.9)
    assert all(k.startswith("target.") for k in obj.state_dict()), "the teacher must not be objective state"
    before = {k: v.clone() for k, v in obj.target.net.state_dict().items()}
    with torch.no_grad():
        for p in student.parameters():
            p.add_(1.0)
    obj.after_step(student, 0)
    for k, v in obj.target.net.state_dict().items():
        torch.testing.assert_close(v, 0.9 * before[k] + 0.1 * student.state_dict()[k])
    loss, _ = obj.loss(student, {"x0": data(0, 8)}, RandomSource.from_seed(0, 8), 0)
    loss.backward()
    assert all(p.grad is not None for p in student.parameters())
    assert all(p.grad is None for p in obj.target.net.parameters())


def test_cd_weighting_is_lambda_of_the_level_gap():
    """lambda(t_n) = 1 / (sigma_{n+1} - sigma_n) (iCT section 3.5) scales each row's distance: with
    two levels every row is the pair (sigma_min, sigma_max), so the loss is the uniform one over
    the gap, for the same draws."""
    from components.objectives.consistency_common import karras_levels

    losses = {}
    for weighting in ("uniform", "inverse_gap"):
        process, _, student, obj = setup(levels=2, weighting=weighting)
        losses[weighting] = obj.loss(student, {"x0": data(0, 8)}, RandomSource.from_seed(0, 8), 0)[0]
    lo, hi = karras_levels(process, 2).tolist()
    torch.testing.assert_close(losses["inverse_gap"], losses["uniform"] / (hi - lo))
    assert CdSpec().weighting == "uniform"  # CM's lambda = 1


def test_cd_rejects_a_teacher_solver_without_a_deterministic_step():
    for bad in ("dpmpp_2m", "ddpm", "rk45"):
        with pytest.raises(ValueError, match="deterministic one-step form"):
            CdSpec(teacher_solver=bad)
    assert "cd" in OBJECTIVES.kinds()


@pytest.mark.slow
def test_cd_one_step_samples_match_gaussian_data_where_ddim_collapses(one_thread):
    process, teacher, student, obj = setup(levels=18, mu=0.95, teacher_solver="heun")
    opt = torch.optim.Adam(student.parameters(), lr=2e-3)
    for step in range(1500):
        loss, _ = obj.loss(student, {"x0": data(step, 256)}, RandomSource.from_seed(step, 256), step)
        opt.zero_grad()
        loss.backward()
        opt.step()
        obj.after_step(student, step)
    n = 20000
    rng = RandomSource.from_seed(123, n)
    x_T = process.prior((2,), rng)
    ts = KarrasSpec().build()(process, 1)
    with torch.no_grad():
        cd = student(x_T, torch.full((n,), process.t_max)).x0
        ddim = DdimSpec().build()(bind(teacher), process, x_T, ts, rng)

    def errs(x):
        return (x.mean(0) - MU).abs().max().item(), (x.std(0) - S).abs().max().item()

    (cd_m, cd_s), (dd_m, dd_s) = errs(cd), errs(ddim)
    msg = f"1-step CD: mean err {cd_m:.4f}, std err {cd_s:.4f}; 1-step DDIM: mean err {dd_m:.4f}, std err {dd_s:.4f}"
    print(msg)
    assert cd_m < 0.05 and cd_s < 0.05, msg
    assert cd_s < dd_s / 5, msg


@pytest.mark.slow
def test_a_cd_run_resumed_mid_way_is_bit_identical_target_network_included(tmp_path):
    """The whole loop in process (workers=0): a tiny ddpm-digits teacher, a consistency student
    distilled with CD (DDIM as Phi); 4 steps + resume to 6 == 6 straight, for the weights, their
    EMA and the objective's target network theta^- (objective.safetensors)."""
    import zoo
    from safetensors.torch import load_file

    from tests.conftest import tiny_overrides

    teacher = zoo.train("ddpm-digits", output=str(tmp_path / "t"), progress=False, **tiny_overrides(steps=2))
    kw = dict(objective={"kind": "cd", "teacher": teacher.dir, "teacher_solver": "ddim", "levels": 6},
              denoiser={"kind": "consistency"})
    straight = zoo.train("ddpm-digits", output=str(tmp_path / "a"), progress=False, **tiny_overrides(steps=6, **kw))
    first = zoo.train("ddpm-digits", output=str(tmp_path / "b"), progress=False, **tiny_overrides(steps=4, **kw))
    resumed = zoo.train("ddpm-digits", output=str(tmp_path / "b"), progress=False, resume=first.dir,
                        **tiny_overrides(steps=6, **kw))
    for name in ("model.safetensors", "ema.safetensors", "objective.safetensors"):
        a, b = load_file(f"{straight.checkpoint}/{name}"), load_file(f"{resumed.checkpoint}/{name}")
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    target, model = load_file(f"{straight.checkpoint}/objective.safetensors"), load_file(f"{straight.checkpoint}/model.safetensors")
    assert any(not torch.equal(target[k], model[k.removeprefix("target.net.")]) for k in target
               if k.removeprefix("target.net.") in model), "theta^- must be the EMA target, not the weights"


def test_ict_curriculum_level_sampling_and_weighting_follow_the_paper():
    from components.objectives import IctSpec

    obj = IctSpec().build()
    obj.attach(Denoiser(Mlp(), EdmProcessSpec().build(), ConsistencySpec().build()), None, total_steps=400_000)
    # K' = floor(400000 / (log2 128 + 1)) = 50000: N doubles from 11 every 50000 steps up to 1281
    assert [obj.levels_at(k) for k in (0, 49_999, 50_000, 100_000, 350_000, 399_999)] == [11, 11, 21, 41, 1281, 1281]
    sig = torch.tensor([0.002, 0.1, 1.0, 80.0], dtype=torch.float64)
    p = obj.level_probs(sig)
    # the lognormal N(-1.1, 2^2) mass in each interval, normalised
    from statistics import NormalDist

    cdf = [NormalDist(-1.1, 2.0).cdf(float(s.log())) for s in sig]
    want = torch.tensor([b - a for a, b in zip(cdf, cdf[1:])], dtype=torch.float64)
    torch.testing.assert_close(p, want / want.sum())
    with pytest.raises(ValueError, match="without a teacher"):
        obj.attach(None, GaussianDenoiser(EdmProcessSpec().build(), MU, S), 10)
    student = Denoiser(Mlp(), EdmProcessSpec().build(), ConsistencySpec().build())
    loss, _ = obj.loss(student, {"x0": data(0, 16)}, RandomSource.from_seed(0, 16), 0)
    loss.backward()
    assert torch.isfinite(loss) and all(p.grad is not None for p in student.parameters())


def test_pd_target_makes_one_student_ddim_step_match_two_teacher_steps():
    """Salimans & Ho Algorithm 2: with x~ as its x-prediction, one DDIM step t -> t'' of the
    student lands exactly on the teacher's two DDIM steps t -> t' -> t''."""
    from components.noise import VpCosineSpec
    from components.objectives.pd import pd_target
    from components.solvers.base import row_alpha_sigma
    from components.solvers.ddim import Ddim

    process = VpCosineSpec(timesteps=None).build()
    teacher = bind(GaussianDenoiser(process, MU.double(), S.double()))
    t = torch.tensor([0.9, 0.5, 0.2], dtype=torch.float64)
    t1, t2 = t - 0.05, t - 0.1
    z = torch.randn(3, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    rng = RandomSource.from_seed(0, 3)
    two = Ddim().step(teacher, process, Ddim().step(teacher, process, z, t, t1, rng), t1, t2, rng)
    (a_t, s_t), (a2, s2) = row_alpha_sigma(process, t), row_alpha_sigma(process, t2)
    x_tilde = pd_target(z, two, a_t, s_t, a2, s2)
    eps = (z - a_t[:, None] * x_tilde) / s_t[:, None]
    torch.testing.assert_close(a2[:, None] * x_tilde + s2[:, None] * eps, two, rtol=1e-10, atol=1e-10)


def test_pd_student_starts_from_the_teacher_and_trains():
    from components.objectives import PdSpec

    process = EdmProcessSpec().build()
    teacher = Denoiser(Mlp(), process, ConsistencySpec().build())
    with torch.no_grad():
        for p in teacher.parameters():
            p.add_(0.1)
    student = Denoiser(Mlp(), process, ConsistencySpec().build())
    obj = PdSpec(steps=4).build()
    obj.attach(student, teacher, 10)
    assert all(torch.equal(a, b) for a, b in zip(student.parameters(), teacher.parameters()))
    loss, _ = obj.loss(student, {"x0": data(0, 16)}, RandomSource.from_seed(0, 16), 0)
    loss.backward()
    assert torch.isfinite(loss) and all(p.grad is not None for p in student.parameters())
    assert all(p.grad is None for p in teacher.parameters())


def test_pd_weightings_are_the_papers_x_eps_and_v_space_losses():
    """Salimans & Ho section 4: with x_hat - x and eps_hat - eps = (alpha / sigma)(x - x_hat), the
    x-space MSE weighted by SNR is the eps-space MSE, by SNR + 1 the v-space MSE (VP: alpha^2 +
    sigma^2 = 1), by max(SNR, 1) the larger of the x- and eps-space MSEs ("truncated SNR")."""
    from components.noise import VpLinearSpec
    from components.objectives.pd import pd_weight
    from components.solvers.base import row_alpha_sigma

    process = VpLinearSpec().build()
    t = torch.tensor([1.0, 0.75, 0.5, 0.25, 0.05], dtype=torch.float64)
    a, s = row_alpha_sigma(process, t)
    gen = torch.Generator().manual_seed(0)
    x, eps = torch.randn(5, 3, generator=gen, dtype=torch.float64), torch.randn(5, 3, generator=gen, dtype=torch.float64)
    x_hat = x + 0.1 * torch.randn(5, 3, generator=gen, dtype=torch.float64)
    z = a[:, None] * x + s[:, None] * eps
    eps_hat = (z - a[:, None] * x_hat) / s[:, None]
    v, v_hat = a[:, None] * eps - s[:, None] * x, a[:, None] * eps_hat - s[:, None] * x_hat
    mse = lambda p, q: (p - q).pow(2).mean(1)  # noqa: E731
    torch.testing.assert_close(pd_weight(a, s, "snr") * mse(x_hat, x), mse(eps_hat, eps))
    torch.testing.assert_close(pd_weight(a, s, "snr_plus_one") * mse(x_hat, x), mse(v_hat, v))
    torch.testing.assert_close(pd_weight(a, s, "truncated_snr") * mse(x_hat, x),
                               torch.maximum(mse(x_hat, x), mse(eps_hat, eps)))


def test_pd_students_sample_on_the_grid_they_are_distilled_on():
    """One student step must be two teacher steps of the objective's grid: the N-step grid must be
    every other time of the 2N-step one (trailing nests; diffusers' linspace "uniform" does not,
    its last step of any length is .001 -> 0), and the entry must sample on it with N steps."""
    import zoo
    from zoo.errors import SpecError

    spec = zoo.get("pd-digits")
    sampling, objective = spec.model.sampling, spec.train.objective
    assert (sampling.grid, sampling.steps) == (objective.grid, objective.steps)
    with pytest.raises(SpecError, match=r"samples 4 steps on the uniform grid"):
        zoo.get("pd-digits", **{"sampling.grid": {"kind": "uniform"}})
    with pytest.raises(SpecError, match=r"samples 8 steps on the trailing grid"):
        zoo.get("pd-digits", **{"sampling.steps": 8})
    with pytest.raises(SpecError, match=r"objective.grid: the uniform grid does not nest: its 4-step times "
                                        r"\[1.0, 0.667, 0.334, 0.001, 0.0\]"):
        zoo.get("pd-digits", **{"sampling.grid": {"kind": "uniform"}, "objective.grid": {"kind": "uniform"}})
    assert zoo.get("pd-digits", **{"sampling.steps": 2, "objective.steps": 2}).model.sampling.steps == 2
