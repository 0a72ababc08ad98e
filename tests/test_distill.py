"""``zoo.distill`` / ``zoo distill``: which student spec a teacher and an objective make, chained
progressive-distillation rounds, and (slow) the whole path on tiny models: rounds are run folders
naming their teacher's pinned checkpoint, a resumed chain reuses them, the student loads, samples
and its spec round-trips like any run."""

from __future__ import annotations

from dataclasses import replace

import pytest

import zoo
from components.objectives import OBJECTIVES
from jobs.distill import derived_entry, distillation_kinds, round_spec, student_spec, with_teacher, with_teacher_autoencoder
from zoo.resolve import resolve


def test_into_iterates_the_registrys_distillation_objectives():
    kinds = distillation_kinds()
    assert {"cd", "ict", "pd"} <= set(kinds)
    assert not {"dsm", "edm", "rectified_flow"} & set(kinds)
    assert kinds == [k for k in OBJECTIVES.kinds() if getattr(OBJECTIVES.member(k), "distills_into", None)]
    with pytest.raises(zoo.SpecError, match=r"into='dsm': not a distillation objective \(cd"):
        student_spec(resolve("edm-digits", weights="w.safetensors"), "dsm", {})
    with pytest.raises(zoo.SpecError, match="trains with edm, not a distillation objective"):
        student_spec(resolve("edm-digits", weights="w.safetensors"), "edm-digits", {})


def test_the_catalog_entry_distilling_the_teacher_is_the_student():
    edm = resolve("edm-digits", weights="w.safetensors")
    assert student_spec(edm, "cd", {}).name == "cd-digits"
    assert student_spec(edm, "ict", {}).name == "ict-digits"  # no teacher field: same backbone, process, data
    assert student_spec(resolve("ddpm-digits", weights="w.safetensors"), "pd", {}).name == "pd-digits"
    assert student_spec(resolve("edm-cifar", weights="w.safetensors"), "cd", {}).name == "cd-edm-cifar"
    assert student_spec(edm, "cd-digits", {"objective.levels": 40}).train.objective.levels == 40
    two = student_spec(resolve("ddpm-digits", weights="w.safetensors"), "pd", {"objective.steps": 2})
    assert two.train.objective.steps == two.model.sampling.steps == 2  # the student samples in its distilled steps


def test_a_teacher_without_an_entry_gets_a_student_derived_from_its_recipe():
    rf = resolve("rf-digits", weights="w.safetensors")
    cd = student_spec(rf, "cd", {})
    assert cd.name == "cd-rf-digits" and cd.model.denoiser.kind == "consistency"
    assert (cd.model.process, cd.model.backbone, cd.train.data) == (rf.spec.process, rf.spec.backbone, "builtin:digits")
    assert cd.model.sampling.solver.kind == "consistency" and cd.model.sampling.steps == 1
    pd = student_spec(rf, "pd", {})
    assert pd.model.denoiser == rf.spec.denoiser and pd.train.objective.steps == rf.spec.sampling.steps // 2
    assert pd.model.sampling.grid == pd.train.objective.grid and pd.model.sampling.grid.kind == "trailing"
    assert pd.train.objective.weighting == "truncated_snr"  # a velocity student: the paper's
    eps = derived_entry("pd", resolve("ddpm-digits", weights="w.safetensors"))  # an eps student: its loss in eps space
    assert eps.model.denoiser.kind == "eps" and eps.train.objective.weighting == "snr"


def test_lcd_students_are_latent_consistency_models_decoding_with_the_teachers_vae():
    ldm = resolve("ldm-tiny", weights="w.safetensors")
    assert student_spec(ldm, "lcd", {}).name == "lcm-tiny"  # the catalog entry naming ldm-tiny as its teacher
    derived = derived_entry("lcd", ldm)  # what a teacher without an entry gets
    assert derived.model.denoiser.kind == "lcm" and derived.model.denoiser.prediction == "eps"
    assert derived.model.backbone.time_cond_proj_dim == 256 and derived.model.guidance_input
    assert (derived.model.sampling.solver.kind, derived.model.sampling.steps) == ("lcm", 4)
    assert derived.model.conditioner.drop_prob == 0.0 and derived.train.objective.init_from_teacher
    with pytest.raises(zoo.SpecError, match="its dit backbone has no guidance-scale embedding"):
        derived_entry("lcd", resolve("dit-tiny", weights="w.safetensors"))
    # the student takes the teacher's fitted KL-VAE (it has none of its own), only when they are the same VAE
    vae = ldm.spec.autoencoder.model_copy(update={"weights": "/runs/ldm-tiny-vae-1a2b"})
    teacher = replace(ldm, spec=ldm.spec.model_copy(update={"autoencoder": vae}))
    assert with_teacher_autoencoder(zoo.get("lcm-tiny"), teacher).model.autoencoder.weights == "/runs/ldm-tiny-vae-1a2b"
    other = replace(ldm, spec=ldm.spec.model_copy(update={"autoencoder": vae.model_copy(update={"latent_channels": 4})}))
    assert with_teacher_autoencoder(zoo.get("lcm-tiny"), other).model.autoencoder.weights is None


def test_the_spec_names_its_pinned_teacher():
    cd = with_teacher(zoo.get("cd-digits"), "/runs/edm/checkpoints/step_000600", None)
    assert cd.train.objective.teacher == "/runs/edm/checkpoints/step_000600"
    ict = with_teacher(zoo.get("ict-digits"), "/runs/edm/checkpoints/step_000600", None)
    assert ict.model.weights == "/runs/edm/checkpoints/step_000600"  # no teacher field: starts from its weights
    named = with_teacher(zoo.get("cd-digits"), "edm-digits", "s3://b/edm.safetensors")
    assert (named.train.objective.teacher, named.train.objective.teacher_weights) == ("edm-digits", "s3://b/edm.safetensors")
    with pytest.raises(zoo.CheckpointError, match="teacher 'edm-digits' has no weights"):
        zoo.distill("edm-digits", into="cd")


def test_chained_rounds_halve_the_steps_down_to_the_entrys():
    final = zoo.get("pd-digits")
    assert final.train.objective.steps == final.model.sampling.steps == 4
    rounds = [round_spec(final, 3, k) for k in range(3)]
    assert [(r.train.objective.steps, r.model.sampling.steps) for r in rounds] == [(16, 16), (8, 8), (4, 4)]
    assert len({r.hash() for r in rounds}) == 3 and "round 2 of 3: 16 -> 8 steps" in rounds[1].description
    with pytest.raises(zoo.SpecError, match="rounds=2: cd has no step count to halve"):
        zoo.distill("edm-digits", weights="w.safetensors", into="cd", rounds=2)


@pytest.mark.slow
def test_chained_pd_rounds_are_resumable_runs_and_the_student_samples(tmp_path):
    """In process (workers=0), tiny models: a 2-step teacher run, then 2 PD rounds (8 -> 4 -> 2
    steps); each round's spec names the previous round's pinned checkpoint; a second call with
    resume=True reuses both runs; the student loads from its folder and samples in 2 steps."""
    from tests.conftest import tiny_overrides

    kw = tiny_overrides(steps=2, output=str(tmp_path))
    teacher = zoo.train("ddpm-digits", progress=False, **kw)
    with pytest.raises(zoo.SpecError, match="pd distils 2 steps on the trailing grid .* but model.sampling samples 5"):
        zoo.distill(teacher.dir, into="pd", rounds=2, progress=False, **{**kw, "objective.steps": 2})
    kw = {k: v for k, v in kw.items() if k != "sampling.steps"}  # objective.steps sets the student's
    student = zoo.distill(teacher.dir, into="pd", rounds=2, progress=False, **{**kw, "objective.steps": 2})
    first = student.rounds[0]
    assert first.spec.train.objective.teacher == teacher.checkpoint
    assert student.spec.train.objective.teacher == first.checkpoint
    assert [first.spec.model.sampling.steps, student.spec.model.sampling.steps] == [4, 2]
    again = zoo.distill(teacher.dir, into="pd", rounds=2, progress=False, resume=True, **{**kw, "objective.steps": 2})
    assert (again.rounds[0].dir, again.dir) == (first.dir, student.dir)
    model = zoo.load(student.dir)
    assert model.spec == student.spec.model and model.sample(2, seed=0).shape == (2, 1, 16, 16)


@pytest.mark.slow
def test_zoo_distill_cli_trains_a_consistency_student(tmp_path):
    from typer.testing import CliRunner

    from tests.conftest import tiny_overrides
    from zoo.cli import app

    kw = tiny_overrides(steps=2, output=str(tmp_path), **{"sampling.steps": 2})
    teacher = zoo.train("edm-digits", progress=False, **kw)
    pairs = [f"{k}={v}".replace("'", "") for k, v in kw.items() if k not in ("sampling.steps",)]
    res = CliRunner().invoke(app, ["distill", teacher.dir, *pairs, "--into", "cd", "--no-progress"])
    assert res.exit_code == 0, res.output
    run_dir = res.output.split("run:")[1].split()[0]
    model = zoo.load(run_dir)
    assert model.spec.denoiser.kind == "consistency" and model.sample(2, seed=0).shape == (2, 1, 16, 16)
    bad = CliRunner().invoke(app, ["distill", teacher.dir, "--into", "dsm"])
    assert bad.exit_code == 2 and "not a distillation objective" in bad.output
