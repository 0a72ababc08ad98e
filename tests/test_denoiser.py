"""Every parameterization turns the same x0/eps into a consistent Prediction; guidance and
clipping follow their formulas."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from components.denoisers import Denoiser, EpsSpec, Prediction, VelocitySpec, VSpec, X0Spec, bind
from components.noise import VpCosineSpec, VpLinearSpec
from components.util import bcast


class Oracle(nn.Module):
    """A backbone that outputs, in its parameterization, the truth for fixed (x0, eps)."""

    def __init__(self, kind, process, x0, eps):
        super().__init__()
        self.kind, self.process, self.x0, self.eps = kind, process, x0, eps
        self.t = None

    def forward(self, x, c_noise, cond=None):
        t = self.t
        a, s = bcast(self.process.alpha(t), x), bcast(self.process.sigma(t), x)
        da, ds = (bcast(d, x) for d in self.process.derivatives(t))
        return {
            "eps": self.eps,
            "x0": self.x0,
            "v": a * self.eps - s * self.x0,
            "velocity": da * self.x0 + ds * self.eps,
        }[self.kind]


@pytest.mark.parametrize("kind,spec", [("eps", EpsSpec()), ("x0", X0Spec()), ("v", VSpec()), ("velocity", VelocitySpec())])
@pytest.mark.parametrize("process", [VpLinearSpec(), VpCosineSpec(timesteps=None)], ids=["linear", "cosine"])
def test_parameterizations_recover_x0_and_eps(kind, spec, process):
    torch.manual_seed(0)
    p = process.build()
    x0, eps = torch.randn(6, 2, 4, 4, dtype=torch.float64), torch.randn(6, 2, 4, 4, dtype=torch.float64)
    t = torch.linspace(0.05, 0.95, 6)
    x = p.add_noise(x0, eps, t.double())
    backbone = Oracle(kind, p, x0, eps)
    backbone.t = t.double()
    pred = Denoiser(backbone, p, spec.build())(x, t)
    torch.testing.assert_close(pred.x0, x0, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(pred.eps, eps, atol=1e-5, rtol=1e-5)
    a, s = bcast(p.alpha(t.double()), x), bcast(p.sigma(t.double()), x)
    torch.testing.assert_close(pred.v, a * eps - s * x0, atol=1e-5, rtol=1e-5)


def test_guidance_is_the_cfg_formula_batched_in_one_call():
    calls = []

    def den(x, t, cond):
        calls.append(len(x))
        lab = cond["label"].double().reshape(-1, 1)
        one = torch.ones_like(x)
        return Prediction(x, one, one, lab * one, 2 * lab * one)

    x, t = torch.zeros(3, 1), torch.full((3,), 0.5)
    cond, null = {"label": torch.tensor([1, 2, 3])}, {"label": torch.tensor([10, 10, 10])}
    pred = bind(den, cond, null, guidance=2.0)(x, t)
    assert calls == [6]
    # eps~ = (1 + w) eps(c) - w eps(null)
    torch.testing.assert_close(pred.eps[:, 0], 3 * 2 * torch.tensor([1.0, 2, 3]).double() - 2 * 20.0)
    torch.testing.assert_close(pred.x0[:, 0], 3 * torch.tensor([1.0, 2, 3]).double() - 2 * 10.0)


def test_clip_keeps_x_t_consistent():
    x = torch.tensor([[3.0]])
    a, s = torch.tensor([[0.6]]), torch.tensor([[0.8]])
    pred = Prediction(x, a, s, torch.tensor([[4.0]]), (x - 0.6 * 4.0) / 0.8).with_x0(torch.tensor([[1.0]]))
    torch.testing.assert_close(a * pred.x0 + s * pred.eps, x)
