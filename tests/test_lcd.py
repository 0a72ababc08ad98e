"""Latent consistency distillation (LCM Algorithm 1) and fine-tuning (Algorithm 4): the skipping
chain, the teacher's w-guided Psi step (eq. 10) against a guided DDIM step computed directly, the
student started from the teacher with its w-embedding, the EMA target as the only state, and a
killed LCD run resuming bit-identically (target network and w sampling included)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from components.denoisers import EpsSpec, LcmSpec, Prediction, bind
from components.denoisers.base import Denoiser
from components.noise import VpScaledLinearSpec
from components.objectives import OBJECTIVES, LcdSpec, LcfSpec
from components.objectives.lcd import skipping_levels
from components.random import RandomSource
from components.solvers import Ddim


class Toy(nn.Module):
    """A class- and w-conditional backbone: out = A x + b[label] + g(w) (small, deterministic)."""

    def __init__(self, w_embed: bool, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.a = nn.Parameter(0.3 * torch.randn(4, 4, generator=g))
        self.b = nn.Parameter(torch.randn(11, 4, generator=g))
        self.time = nn.Parameter(torch.randn(4, generator=g) * 1e-3)
        self.w_proj = nn.Parameter(torch.randn(4, generator=g)) if w_embed else None

    def forward(self, x, c_noise, cond=None):
        out = x @ self.a.T + self.b[cond["label"]] + self.time * c_noise.reshape(-1, 1).to(x)
        if self.w_proj is not None:
            out = out + cond["w"].reshape(-1, 1) * self.w_proj
        return out


class Labels:
    guidable = True

    def null(self, n):
        return {"label": torch.full((n,), 10, dtype=torch.long)}


def setup(**kw):
    process = VpScaledLinearSpec().build()
    teacher = Denoiser(Toy(False, seed=1), process, EpsSpec().build())
    student = Denoiser(Toy(True), process, LcmSpec().build())
    obj = LcdSpec(teacher="t", **kw).build()
    obj.attach(student, teacher, total_steps=10)
    obj.attach_conditioner(Labels())
    return process, teacher, student, obj


def batch(n=6):
    g = torch.Generator().manual_seed(5)
    return {"x0": torch.randn(n, 4, generator=g), "cond": {"label": torch.arange(n) % 10}}


def test_registered_and_validated():
    assert {"lcd", "lcf"} <= set(OBJECTIVES.kinds())
    with pytest.raises(ValueError, match="w_max"):
        LcdSpec(w_min=5, w_max=2)
    with pytest.raises(ValueError, match="deterministic one-step"):
        LcdSpec(teacher_solver="dpmpp_2m")
    with pytest.raises(ValueError, match="needs a teacher"):
        LcdSpec().build().attach(Denoiser(Toy(True), VpScaledLinearSpec().build(), LcmSpec().build()), None)
    with pytest.raises(ValueError, match="not the teacher's"):
        LcdSpec().build().attach(Denoiser(Toy(True), VpScaledLinearSpec(beta_end=0.02).build(), LcmSpec().build()),
                                 Denoiser(Toy(False), VpScaledLinearSpec().build(), EpsSpec().build()))
    with pytest.raises(ValueError, match="without a teacher"):
        LcfSpec().build().attach(Denoiser(Toy(True), VpScaledLinearSpec().build(), LcmSpec().build()), Toy(False))


def test_skipping_chain_is_the_papers():
    process = VpScaledLinearSpec().build()
    start, end = skipping_levels(process, RandomSource.from_seed(0, 4000), 20, torch.device("cpu"))
    s, e = (start * 1000 - 1).round().long(), (end * 1000 - 1).round().long()
    assert set(s.tolist()) == set(range(19, 1000, 20))  # N = 1000 / k = 50 levels, all drawn
    assert torch.equal(e, (s - 20).clamp_min(0))
    with pytest.raises(ValueError, match="does not divide"):
        skipping_levels(process, RandomSource.from_seed(0, 2), 30, torch.device("cpu"))


def test_student_starts_from_the_teacher_and_state_is_the_target():
    _, teacher, student, obj = setup(mu=0.9)
    for k, v in teacher.state_dict().items():
        assert torch.equal(student.state_dict()[k], v), k
    assert obj.new_in_student == ["backbone.w_proj"]
    assert all(k.startswith("target.") for k in obj.state_dict()), "the teacher must not be objective state"
    before = {k: v.clone() for k, v in obj.target.net.state_dict().items()}
    with torch.no_grad():
        for p in student.parameters():
            p.add_(1.0)
    obj.after_step(student, 0)
    for k, v in obj.target.net.state_dict().items():
        torch.testing.assert_close(v, 0.9 * before[k] + 0.1 * student.state_dict()[k])


def test_teacher_step_is_a_w_guided_ddim_step_and_the_loss_matches():
    """z^ = z + (1 + w) Psi(c) - w Psi(null) with Psi = DDIM's increment equals one DDIM step with
    the classifier-free-guided prediction at each row's own w (DDIM is affine in the prediction);
    the loss is l2 between the student at (z, t_{n+k}) and theta^- at (z^, t_n), both given w."""
    process, teacher, student, obj = setup(w_min=2.0, w_max=9.0)
    b = batch()
    loss, metrics = obj.loss(student, b, RandomSource.from_seed(3, 6), 0)
    # the same draws, in the objective's order: levels, w, noise
    rng = RandomSource.from_seed(3, 6)
    t_start, t_end = skipping_levels(process, rng, 20, torch.device("cpu"))
    w = 2.0 + 7.0 * rng.rand()
    z = rng.randn(4)
    x = process.add_noise(b["x0"], z, t_start.float())
    rows = []
    for i in range(6):
        one = {"label": b["cond"]["label"][i : i + 1]}
        fn = bind(teacher, one, Labels().null(1), guidance=float(w[i]))
        rows.append(Ddim().step(fn, process, x[i : i + 1], t_start[i : i + 1], t_end[i : i + 1], rng))
    x_hat = torch.cat(rows)
    cond_w = {**b["cond"], "w": w}
    target = obj.target(x_hat, t_end.float(), cond_w).x0
    online = student(x, t_start.float(), cond_w).x0
    torch.testing.assert_close(loss, (online - target).pow(2).mean(1).mean(), rtol=1e-5, atol=1e-6)
    assert 2.0 <= float(metrics["w"]) <= 9.0
    loss.backward()
    assert student.backbone.w_proj.grad is not None and student.backbone.w_proj.grad.abs().sum() > 0


def test_guided_prediction_is_the_eq10_combination():
    """The identity the test above leans on, per row: Prediction.guided is (1 + w) c - w null."""
    c = Prediction(*(torch.randn(2, 3) for _ in range(5)))
    u = Prediction(*(torch.randn(2, 3) for _ in range(5)))
    torch.testing.assert_close(Prediction.guided(c, u, 2.5).x0, 3.5 * c.x0 - 2.5 * u.x0)


def test_lcf_target_shares_the_noise_and_trains():
    process = VpScaledLinearSpec().build()
    student = Denoiser(Toy(True), process, LcmSpec().build())
    obj = LcfSpec(w_min=1.0, w_max=1.0).build()
    obj.attach(student)
    b = batch()
    loss, _ = obj.loss(student, b, RandomSource.from_seed(1, 6), 0)
    rng = RandomSource.from_seed(1, 6)
    t_start, t_end = skipping_levels(process, rng, 20, torch.device("cpu"))
    rng.rand()
    z = rng.randn(4)
    cond = {**b["cond"], "w": torch.ones(6)}
    want = (student(process.add_noise(b["x0"], z, t_start.float()), t_start.float(), cond).x0
            - obj.target(process.add_noise(b["x0"], z, t_end.float()), t_end.float(), cond).x0).pow(2).mean(1).mean()
    torch.testing.assert_close(loss, want)
    loss.backward()
    assert student.backbone.a.grad.abs().sum() > 0


CLASS_COND = {"conditioner": {"kind": "class_label", "num_classes": 10, "drop_prob": 0.1}, "backbone.num_classes": 10}


@pytest.mark.slow
def test_a_killed_lcd_run_resumes_bit_identically(tmp_path):
    """The whole loop in process (workers=0): a tiny class-conditional ddpm-digits teacher (eps,
    DDPM chain), an LCM student (lcm boundary scalings, w-embedding time_cond_proj_dim) distilled
    with LCD (DDIM Psi, k = 20, w ~ U[1, 4]); 4 steps + resume to 6 == 6 straight, for the weights,
    their EMA and theta^- (objective.safetensors)."""
    from safetensors.torch import load_file

    import zoo
    from tests.conftest import tiny_overrides

    teacher = zoo.train("ddpm-digits", output=str(tmp_path / "t"), progress=False, **tiny_overrides(steps=2, **CLASS_COND))
    kw = dict(objective={"kind": "lcd", "teacher": teacher.dir, "w_min": 1.0, "w_max": 4.0}, denoiser={"kind": "lcm"},
              conditioner={"kind": "class_label", "num_classes": 10, "drop_prob": 0.0},
              **{"backbone.num_classes": 10, "backbone.time_cond_proj_dim": 16})
    straight = zoo.train("ddpm-digits", output=str(tmp_path / "a"), progress=False, **tiny_overrides(steps=6, **kw))
    first = zoo.train("ddpm-digits", output=str(tmp_path / "b"), progress=False, **tiny_overrides(steps=4, **kw))
    resumed = zoo.train("ddpm-digits", output=str(tmp_path / "b"), progress=False, resume=first.dir,
                        **tiny_overrides(steps=6, **kw))
    for name in ("model.safetensors", "ema.safetensors", "objective.safetensors"):
        a, b = load_file(f"{straight.checkpoint}/{name}"), load_file(f"{resumed.checkpoint}/{name}")
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    target, model = load_file(f"{straight.checkpoint}/objective.safetensors"), load_file(f"{straight.checkpoint}/model.safetensors")
    assert "target.net.backbone.w_proj.weight" in target
    assert any(not torch.equal(target[k], model[k.removeprefix("target.net.")]) for k in target
               if k.removeprefix("target.net.") in model), "theta^- must be the EMA target, not the weights"
    # the distilled LCM samples with w as an input and the lcm solver
    lcm = zoo.load(straight.dir, ema=False)
    assert lcm.spec.guidance_input
    w_proj = lcm.denoiser.backbone.w_proj.weight
    assert w_proj.abs().max() > 0, "LCD trains the zero-initialized w-embedding"
    # six tiny steps move it by ~1e-4, which changes a sample by ~5e-7: below what some CPUs' kernels
    # resolve after the sampler's clamp. Scale it up to see that w reaches the network through sampling.
    with torch.no_grad():
        w_proj.mul_(1e3)
    a = lcm.sample(2, steps=2, solver="lcm", seed=0, labels=[3, 7], guidance=2.0)
    b = lcm.sample(2, steps=2, solver="lcm", seed=0, labels=[3, 7], guidance=5.0)
    assert a.shape == (2, 1, 16, 16) and torch.isfinite(a).all() and not torch.equal(a, b)
