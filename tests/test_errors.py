"""Bad input gives a clear error naming the culprit."""

from __future__ import annotations

import pytest

import zoo
from tests.conftest import tiny_overrides


def test_unknown_model_suggests_close_names():
    with pytest.raises(zoo.UnknownModelError) as e:
        zoo.get("ddpm-digit")
    assert "ddpm-digits" in str(e.value) and e.value.suggestions[0] == "ddpm-digits"


def test_unknown_override_names_it_and_suggests():
    with pytest.raises(zoo.SpecError, match=r"'stepz'.*did you mean steps"):
        zoo.get("ddpm-digits", stepz=3)


def test_invalid_value_names_field_and_allowed_values():
    with pytest.raises(zoo.SpecError, match=r"train\.precision.*'fp32', 'bf16' or 'fp16'"):
        zoo.get("ddpm-digits", precision="fp8")
    with pytest.raises(zoo.SpecError, match=r"train\.steps.*greater than 0"):
        zoo.get("ddpm-digits", steps=-1)


def test_unknown_kind_lists_the_kinds():
    with pytest.raises(zoo.SpecError, match=r"model\.sampling\.solver.*'ddpm', 'ddim'"):
        zoo.get("ddpm-digits", **{"solver.kind": "heun2"})


def test_ambiguous_override_asks_for_a_path():
    with pytest.raises(zoo.SpecError, match="ambiguous"):
        zoo.get("ddpm-digits", kind="x")


def test_nested_overrides_and_kind_switch():
    run = zoo.get("ddpm-digits", lr=3e-4, **{"backbone.channels": 16, "solver.kind": "ddpm"})
    assert run.train.optimizer.lr == 3e-4
    assert run.model.backbone.channels == 16
    assert run.model.sampling.solver.kind == "ddpm" and run.model.sampling.solver.variance == "small"
    assert run.train.steps == zoo.get("ddpm-digits").train.steps  # "steps" is train.steps, not sampling.steps


def test_inconsistent_model_is_rejected():
    with pytest.raises(zoo.SpecError, match="backbone.in_channels"):
        zoo.get("ddpm-digits", **{"backbone.in_channels": 3})
    with pytest.raises(zoo.SpecError, match="attention_resolutions"):
        zoo.get("ddpm-digits", **{"backbone.attention_resolutions": [5]})


def test_paper_scale_entry_needs_data():
    with pytest.raises(zoo.DataError, match=r"ddpm-cifar needs training data: pass data="):
        zoo.train("ddpm-cifar")


def test_unknown_data_source_is_named(tmp_path):
    with pytest.raises(zoo.DataError, match="nowhere:cifar"):
        zoo.train("ddpm-digits", data="nowhere:cifar", output=str(tmp_path), progress=False, **tiny_overrides())


def test_load_without_weights_is_explained():
    with pytest.raises(zoo.CheckpointError, match="no weights"):
        zoo.load("ddpm-cifar")


def test_guidance_on_unconditional_model_is_refused():
    model = zoo.build("ddpm-digits", **{"backbone.channels": 8, "backbone.groups": 4})
    with pytest.raises(ValueError, match="unconditional"):
        model.sample(2, steps=2, guidance=2.0)
    with pytest.raises(ValueError, match="unconditional"):
        model.sample(2, steps=2, labels=3)


def test_build_takes_a_name_a_run_spec_or_a_model_spec_and_says_what_else():
    run = zoo.get("ddpm-digits")
    assert zoo.build(run, **{"backbone.channels": 16}).spec.backbone.channels == 16  # overrides apply to a RunSpec
    assert zoo.build(run.model).spec == run.model
    with pytest.raises(zoo.SpecError, match="overrides \\['steps'\\] apply to catalog names and RunSpecs"):
        zoo.build(run.model, steps=3)
    with pytest.raises(zoo.SpecError, match="takes a catalog name, a RunSpec or a ModelSpec, not dict"):
        zoo.build({"name": "ddpm-digits"})
