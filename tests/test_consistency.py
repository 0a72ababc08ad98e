"""Consistency models: the parameterization's boundary condition and multistep sampling
(CM Algorithm 1) against diffusers' CMStochasticIterativeScheduler."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import zoo
from components.denoisers import DENOISERS, ConsistencySpec, bind
from components.denoisers.base import Denoiser
from components.noise import EdmProcessSpec, RectifiedSpec, VpLinearSpec
from components.random import RandomSource
from components.solvers import ConsistencySamplerSpec


class TinyNet(nn.Module):
    """A time-dependent backbone(x, c_noise, cond) with fixed random weights."""

    def __init__(self, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.mix = nn.Linear(1, 3)

    def forward(self, x, c_noise, cond=None):
        emb = torch.tanh(self.mix(c_noise.float().reshape(-1, 1) / 250))
        return torch.tanh(self.conv(x) + emb[:, :, None, None])


def denoiser(process_spec, **kw):
    return Denoiser(TinyNet(), process_spec.build(), ConsistencySpec(**kw).build())


@pytest.mark.parametrize("process_spec", [EdmProcessSpec(), VpLinearSpec(timesteps=None), RectifiedSpec()],
                         ids=lambda p: p.kind)
def test_boundary_condition_holds_exactly(process_spec):
    den = denoiser(process_spec)
    p = den.process
    x = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    t_min = torch.full((4,), p.t_min)
    with torch.no_grad():
        f = den(x, t_min).x0
        a = float(p.alpha(torch.tensor(p.t_min, dtype=torch.float32).double()))
        if process_spec.kind == "edm":
            assert torch.equal(f, x)  # f(x, eps) = x, bit for bit
        else:
            torch.testing.assert_close(f, x / a, rtol=1e-6, atol=1e-6)
        # away from the boundary the network matters
        assert (den(x, torch.full((4,), 0.5 * p.t_max)).x0 - x).abs().max() > 1e-2
    assert "consistency" in DENOISERS.kinds()


def _diffusers_sample(den, x_T, timesteps, seed):
    from diffusers import CMStochasticIterativeScheduler

    sched = CMStochasticIterativeScheduler(num_train_timesteps=40, sigma_min=0.002, sigma_max=80.0, sigma_data=0.5,
                                           rho=7.0, clip_denoised=False)
    sched.set_timesteps(timesteps=timesteps)
    g = torch.Generator().manual_seed(seed)
    sample = x_T
    with torch.no_grad():
        for t in sched.timesteps:
            scaled = sched.scale_model_input(sample, t)
            out = den.backbone(scaled, torch.full((len(sample),), float(t)), None)
            sample = sched.step(out, t, sample, generator=g).prev_sample
    return sample, sched.sigmas[:-1].double()


@pytest.mark.parametrize("timesteps", [[0], [22, 0], [35, 22, 10, 0]], ids=["1step", "2step", "4step"])
def test_multistep_sampling_equals_diffusers(timesteps):
    """Settings: CMStochasticIterativeScheduler(num_train_timesteps=40, sigma_min=0.002,
    sigma_max=80, sigma_data=0.5, rho=7, clip_denoised=False), custom timesteps, c_noise =
    250 ln(sigma) as openai's CM; same network, x_T and generator seed."""
    pytest.importorskip("diffusers")
    den = denoiser(EdmProcessSpec(), c_noise_scale=250.0)
    x_T = 80.0 * torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    ref, sigmas = _diffusers_sample(den, x_T, timesteps, seed=7)
    grid = torch.cat([sigmas, torch.zeros(1, dtype=torch.float64)])
    with torch.no_grad():
        ours = ConsistencySamplerSpec().build()(bind(den), den.process, x_T, grid, RandomSource.from_seed(7, 2))
        # the same taus given as the spec's times, on a one-step grid from T
        named = ConsistencySamplerSpec(times=sigmas[1:].tolist() or None).build()(
            bind(den), den.process, x_T, grid[[0, -1]], RandomSource.from_seed(7, 2))
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(named, ours, rtol=0, atol=1e-6)


def test_times_must_decrease():
    with pytest.raises(ValueError, match="strictly decreasing"):
        ConsistencySamplerSpec(times=[1.0, 2.0])


CONSISTENCY_ENTRIES = [n for n in zoo.list() if zoo.get(n).model.denoiser.kind == "consistency"]


def test_the_catalog_has_consistency_entries():
    assert {"cd-digits", "ict-digits", "cd-edm-cifar", "ict-cifar"} <= set(CONSISTENCY_ENTRIES)


@pytest.mark.parametrize("name", CONSISTENCY_ENTRIES)
def test_boundary_condition_holds_exactly_for_every_consistency_entry(name):
    """f(x, eps) = x~ bit for bit on every catalog consistency model, with random weights (in
    training mode, dropout on: c_out(eps) = 0 removes the network whatever it outputs). Widths
    are reduced to 32 channels: the boundary is the parameterization's, not the width's."""
    run = zoo.get(name)
    small = {"backbone.channels": 32} if run.model.backbone.kind == "unet" else {}
    torch.manual_seed(0)
    model = zoo.build(zoo.get(name, **small)).train()
    p = model.process
    c, size, _ = model.latent_shape
    x = 3 * torch.randn(3, c, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        f = model.denoiser(x, torch.full((3,), p.t_min), None).x0
        a = float(p.alpha(torch.tensor(p.t_min, dtype=torch.float32).double()))
        assert torch.equal(f, x) if a == 1.0 else torch.allclose(f, x / a, rtol=1e-6, atol=1e-6)
        assert (model.denoiser(x, torch.full((3,), 0.5 * p.t_max), None).x0 - x).abs().max() > 1e-2
