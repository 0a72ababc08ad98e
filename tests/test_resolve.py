"""One resolver for model references (zoo/resolve.py): catalog names with weights= and overrides,
run folders pinned to their newest checkpoint, checkpoints; load, evaluate and serve agree."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

import zoo
from serve.options import ModelOptions
from serve.source import resolve as serve_resolve
from zoo import checkpoint as ckpt
from zoo.evaluation.evaluate import _resolve as evaluate_resolve
from zoo.resolve import Resolved, is_catalog_name, load_model, resolve

TINY = {"backbone.channels": 8, "backbone.groups": 4}


@pytest.fixture()
def run_dir(tmp_path):
    """A run folder with two complete checkpoints whose EMA weights differ (step 1: zeros)."""
    run = zoo.get("ddpm-digits", **TINY)
    model = zoo.build(run)
    weights = {k: v.clone() for k, v in model.denoiser.state_dict().items()}
    zeros = {k: torch.zeros_like(v) for k, v in weights.items()}
    opt = {"state": {}, "param_groups": []}
    root = tmp_path / "ddpm-digits-abc"
    ckpt.write(root / "checkpoints" / ckpt.step_dir(1), run.model_dump_json(), zeros, zeros, opt, 1)
    ckpt.write(root / "checkpoints" / ckpt.step_dir(2), run.model_dump_json(), weights, weights, opt, 2)
    return str(root), weights


def test_a_run_folder_is_pinned_to_its_newest_checkpoint(run_dir):
    root, weights = run_dir
    r = resolve(root)
    assert r.checkpoint == r.weights and r.checkpoint.endswith(ckpt.step_dir(2))
    assert r.run_dir == root and r.name == "ddpm-digits" and r.spec == zoo.get("ddpm-digits", **TINY).model
    model = load_model(r)
    for k, v in model.denoiser.state_dict().items():
        assert torch.equal(v, weights[k]), k
    assert not model.training


def test_catalog_names_take_weights_and_overrides_and_checkpoints_refuse_them(run_dir, tmp_path):
    root, weights = run_dir
    r = resolve("ddpm-digits", weights="s3://b/w.safetensors", steps=3)
    assert (r.weights, r.checkpoint, r.run.train.steps) == ("s3://b/w.safetensors", None, 3)
    assert resolve("ddpm-digits").weights is None
    with pytest.raises(zoo.SpecError, match="weights= applies to catalog names"):
        resolve(root, weights="x.safetensors")
    with pytest.raises(zoo.SpecError, match="overrides apply to catalog names"):
        resolve(root, steps=3)
    with pytest.raises(zoo.CheckpointError, match="'ddpm-digits' has no weights"):
        load_model("ddpm-digits")
    file = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in weights.items()}, file)
    model = zoo.load("ddpm-digits", weights=str(file), **TINY)
    assert all(torch.equal(v, weights[k]) for k, v in model.denoiser.state_dict().items())


def test_a_catalog_name_is_a_name_even_where_a_folder_has_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "ddpm-digits").mkdir()
    (tmp_path / "mine").mkdir()
    assert is_catalog_name("ddpm-digits")
    assert not is_catalog_name("mine") and not is_catalog_name("./x") and not is_catalog_name("s3://b/x")
    assert is_catalog_name("ddpm-digitz")  # a typo goes to the catalog, whose error suggests the name
    with pytest.raises(zoo.UnknownModelError, match="ddpm-digits"):
        resolve("ddpm-digitz")


def test_load_evaluate_and_serve_resolve_alike(run_dir):
    root, _ = run_dir
    r = resolve(root)
    model, data, folder = evaluate_resolve(root, None)
    assert (model.spec, data, folder) == (r.spec, r.run.train.data, r.run_dir)
    source = serve_resolve(ModelOptions(model=root))
    assert (source.spec, source.options.model) == (r.spec, r.checkpoint)
    assert zoo.load(root).spec == r.spec
    assert isinstance(r, Resolved)
    with pytest.raises(zoo.SpecError, match="weights= applies"):
        serve_resolve(ModelOptions(model=root, weights="x.safetensors"))
