"""Every catalog entry validates, round-trips, builds, and trains a step without NaNs
(parametrized over the catalog, as timm tests every registered model)."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

import zoo
from components.random import RandomSource
from zoo.catalog import catalog_path
from zoo.specs import RunSpec

NAMES = zoo.list()


def test_catalog_has_the_foundation_entries():
    assert {"ddpm-cifar", "ddpm-digits"} <= set(NAMES)
    assert zoo.list("ddpm-*") == sorted(n for n in NAMES if n.startswith("ddpm-"))


@pytest.mark.parametrize("name", NAMES)
def test_entry_is_spelled_out_in_full(name):
    """The YAML entry states every field: no code default decides what a catalog model is."""
    raw = yaml.safe_load(catalog_path().read_text())[name]
    full = zoo.get(name).model_dump(mode="json")
    full.pop("name")

    def missing(spelled, complete, path=""):
        out = []
        for k, v in complete.items():
            if k not in spelled:
                out.append(path + k)
            elif isinstance(v, dict):
                out += missing(spelled[k], v, path + k + ".")
        return out

    assert missing(raw, full) == [], f"{name}: fields left to defaults"


@pytest.mark.parametrize("name", NAMES)
def test_entry_round_trips_through_json(name):
    run = zoo.get(name)
    again = RunSpec.model_validate_json(run.model_dump_json())
    assert again == run and again.hash() == run.hash()
    assert json.loads(run.model_dump_json())["name"] == name


@pytest.mark.parametrize("name", NAMES)
def test_entry_builds_and_trains_a_step(name):
    run = zoo.get(name)
    torch.manual_seed(0)
    model = zoo.build(name)
    c, size, _ = model.latent_shape
    images = torch.rand(2, run.model.image.channels, run.model.image.size, run.model.image.size) * 2 - 1
    batch = {"image": images, "label": torch.tensor([1, 2])}
    rng = RandomSource.from_seed(0, 2)
    x0 = model.encode(batch["image"])
    assert x0.shape == (2, c, size, size)
    cond = model.conditioner({"label": batch["label"]}, rng)
    pairs = torch.randn_like(x0)  # the "noise" column of reflow pairs (ignored by other objectives)
    loss, _ = run.train.objective.build().loss(model.denoiser, {"x0": x0, "cond": cond, "noise": pairs}, rng, step=0)
    loss.backward()
    assert torch.isfinite(loss)
    grads = [p.grad for p in model.denoiser.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_ddpm_cifar_is_the_paper_model():
    """Ho et al. 2020: 35.7M parameters, linear betas 1e-4..0.02, T = 1000."""
    model = zoo.build("ddpm-cifar")
    n = sum(p.numel() for p in model.parameters())
    assert abs(n / 1e6 - 35.7) < 0.1, n
    betas = model.process.betas
    assert betas[0].item() == pytest.approx(1e-4) and betas[-1].item() == pytest.approx(0.02)
    assert len(betas) == 1000


def test_hash_is_stable_and_tracks_content():
    a, b = zoo.get("ddpm-digits"), zoo.get("ddpm-digits")
    assert a.hash() == b.hash()
    assert zoo.get("ddpm-digits", steps=7).hash() != a.hash()
    assert zoo.get("ddpm-digits", description="other words").hash() == a.hash()


def test_specs_are_frozen_and_closed():
    run = zoo.get("ddpm-digits")
    with pytest.raises(Exception):
        run.train.steps = 3  # type: ignore[misc]
    body = run.model_dump(mode="json")
    body["train"]["optimizer"]["momentum"] = 0.9
    with pytest.raises(Exception, match="momentum"):
        RunSpec.model_validate(body)
