"""Every catalog entry validates, round-trips, builds, and trains a step without NaNs
(parametrized over the catalog, as timm tests every registered model)."""

from __future__ import annotations

import functools
import json

import pytest
import torch
import yaml

import zoo
from components.random import RandomSource
from zoo.catalog import catalog_path
from zoo.lora import add_adapter
from zoo.specs import RunSpec

NAMES = zoo.list()


def test_catalog_has_the_foundation_entries():
    assert {"ddpm-cifar", "ddpm-digits"} <= set(NAMES)
    assert zoo.list("ddpm-*") == sorted(n for n in NAMES if n.startswith("ddpm-"))


@functools.cache
def raw_catalog() -> dict:
    """catalog.yaml as written (read once: PyYAML's pure-Python parser took 0.36 s a read)."""
    return yaml.safe_load(catalog_path().read_text())


@pytest.mark.parametrize("name", NAMES)
def test_entry_is_spelled_out_in_full(name):
    """The YAML entry states every field: no code default decides what a catalog model is."""
    raw = raw_catalog()[name]
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


def paper_scale(run: RunSpec) -> bool:
    """Entries too large to train a step of at full size on a CPU in a test: 256 px and more, in
    latent space (Stable Diffusion, DiT-XL, LDM) or in pixels (rf-afhq, 2-rf-afhq)."""
    return run.model.image.size >= 256


#: A reduced size of a paper-scale entry, per component kind, for its CPU train step: the same
#: kinds and wiring, small widths. (Full size is built on the meta device below.)
REDUCED = {
    "kl_vae": {"image.size": 64, "autoencoder.block_out_channels": [32, 32, 32, 32], "backbone.resolution": 8},
    "sd_unet": {"backbone.block_out_channels": [32, 32, 32, 32], "backbone.attention_head_dim": 8,
                "backbone.layers_per_block": 1, "backbone.cross_attention_dim": 32},
    "clip_text": {"conditioner.hidden_size": 32, "conditioner.intermediate_size": 37, "conditioner.num_layers": 2,
                  "conditioner.num_heads": 4, "conditioner.tokenizer": "builtin:digits", "conditioner.vocab_size": 579},
    "dit": {"backbone.hidden_size": 32, "backbone.depth": 2, "backbone.num_heads": 4},
    "unet": {"backbone.channels": 32, "backbone.attention_resolutions": [2]},
    # a pixel-space entry: 64 px through all its levels (7 levels of rf-afhq: 64 ... 1 px)
    "identity": {"image.size": 64, "backbone.resolution": 64},
}


def reduced(name: str) -> dict:
    run = zoo.get(name)
    out = {}
    for component in (run.model.autoencoder, run.model.backbone, run.model.conditioner):
        out.update(REDUCED.get(component.kind, {}))
    return out


#: Entries above this many parameters train their step at width 32 (CIFAR-size UNets of 35-56M:
#: seconds per build and step on a CPU): the same levels, attention and wiring, fewer channels.
NARROW_ABOVE = 20e6
NARROW = {"unet": {"backbone.channels": 32}}


def narrow(name: str) -> dict:
    return NARROW.get(zoo.get(name).model.backbone.kind, {})


@pytest.mark.parametrize("name", NAMES)
def test_entry_builds_and_trains_a_step(name, request):
    run = entry = zoo.get(name)
    big = paper_scale(entry)
    overrides = {}
    if getattr(getattr(run.train.objective, "distance", None), "kind", None) == "lpips":  # weights by path: tiny random ones
        w = request.getfixturevalue("lpips_weights")(run.train.objective.distance.net)
        overrides = {"distance.weights": w["weights"], "distance.backbone": w["backbone"], "distance.resize": 32}
    torch.manual_seed(0)
    with torch.device("meta"):  # the full size exists, on no memory
        params = sum(p.numel() for p in zoo.build(name).denoiser.parameters())
    shrink = {}
    if big:
        assert params > 50e6
        shrink = reduced(name)
    elif params > NARROW_ABOVE:
        shrink = narrow(name)
        assert shrink, f"{name}: {params / 1e6:.0f}M parameters and no narrow width for its backbone in NARROW"
    run = zoo.get(name, **overrides, **shrink)
    if big:
        assert run.model.image.size < entry.model.image.size
    model = zoo.build(run)
    c, size, _ = model.latent_shape
    images = torch.rand(2, run.model.image.channels, run.model.image.size, run.model.image.size) * 2 - 1
    batch = {"image": images, "label": torch.tensor([1, 2])}
    rng = RandomSource.from_seed(0, 2)
    x0 = model.encode(batch["image"])
    assert x0.shape == (2, c, size, size)
    captions = ["a handwritten digit one", "the number two"]
    cond = model.conditioner({"label": batch["label"], "caption": captions}, rng)
    pairs = torch.randn_like(x0)  # the "noise" column of reflow pairs (ignored by other objectives)
    objective = run.train.objective.build()
    if hasattr(objective, "attach"):  # distillation: an untrained teacher of the named entry, reduced alike
        teacher = getattr(run.train.objective, "teacher", None)
        if teacher:  # shrunk as the student is
            teacher_shrink = reduced(teacher) if big else (narrow(teacher) if shrink else {})
            teacher = zoo.build(zoo.get(teacher, **teacher_shrink)).denoiser
        objective.attach(model.denoiser, teacher, run.train.steps)
        if hasattr(objective, "attach_conditioner"):
            objective.attach_conditioner(model.conditioner)
    if run.train.lora is not None:  # LoRA entries train adapters alone (zoo/lora.py)
        add_adapter(model, run.train.lora, seed=0)
    loss, _ = objective.loss(model.denoiser, {"x0": x0, "cond": cond, "noise": pairs}, rng, step=0)
    loss.backward()
    assert torch.isfinite(loss)
    grads = [p.grad for p in model.denoiser.parameters() if p.requires_grad]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)


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


def test_paper_scale_latent_models_have_the_papers_sizes():
    """Built on the meta device: SD 1.5 (UNet 859.5M, VAE 83.7M, CLIP ViT-L text 123.1M), SD 2.1
    (UNet 865.9M, OpenCLIP-H text 340.4M, v-prediction), DiT-XL/2 (675M, Peebles & Xie Table 4)."""
    def millions(module):
        return round(sum(p.numel() for p in module.parameters()) / 1e6, 1)

    with torch.device("meta"):
        sd15, sd21, dit = zoo.build("sd-1.5"), zoo.build("sd-2.1-768"), zoo.build("dit-xl-2")
    assert (millions(sd15.denoiser), millions(sd15.autoencoder), millions(sd15.conditioner)) == (859.5, 83.7, 123.1)
    assert (millions(sd21.denoiser), millions(sd21.conditioner)) == (865.9, 340.4)
    assert sd21.spec.denoiser.kind == "v" and sd21.latent_shape == (4, 96, 96)
    assert abs(millions(dit.denoiser) - 675) < 1 and dit.latent_shape == (4, 32, 32)


@pytest.mark.parametrize("name", ["sd-1.5", "sd-2.1-768", "ldm", "dit-xl-2"])
def test_paper_scale_entries_need_weights(name):
    with pytest.raises(zoo.CheckpointError, match=f"{name!r} has no weights: pass weights="):
        zoo.load(name)
