"""Serving without a cluster: options, limits, batching with per-request seeds, fault isolation,
encodings, and the exported Serve config checked against Ray's own schema."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml
from pydantic import ValidationError
from typer.testing import CliRunner

import zoo
from serve import encoding
from serve.batching import Job, groups, run_batch
from serve.limits import ModelRules, RequestError, solver_kinds
from serve.options import AutoscalingOptions, Limits, ModelOptions, ServeOptions
from serve.schemas import GenerateRequest
from tests.conftest import tiny_overrides
from tests.serve_support import CLASSES, faulty, untrained_weights
from zoo import catalog
from zoo.cli import app


@pytest.fixture(scope="module")
def tiny() -> zoo.Model:
    torch.manual_seed(0)
    return zoo.build("ddpm-digits", **tiny_overrides()).eval()


@pytest.fixture(scope="module")
def tiny_cond() -> zoo.Model:
    torch.manual_seed(0)
    return zoo.build("ddpm-digits", **tiny_overrides(**CLASSES)).eval()


def job(seed: int, n: int = 1, steps: int = 3, **kw) -> Job:
    solver = json.dumps({"eta": 0.0, "kind": "ddim"}, sort_keys=True)
    return Job(n=n, steps=steps, solver=kw.pop("solver", solver), guidance=kw.pop("guidance", 0.0), seed=seed, **kw)


def test_options_are_typed_and_errors_name_the_field():
    with pytest.raises(ValidationError, match="min_replicas=3 > max_replicas=1"):
        AutoscalingOptions(min_replicas=3, max_replicas=1)
    with pytest.raises(ValidationError, match=r"max_images=4 < limits.max_n=8"):
        ModelOptions(model="x", batching={"max_images": 4}, limits={"max_n": 8})
    with pytest.raises(ValidationError, match="max_replica"):
        ModelOptions(model="x", autoscaling={"max_replica": 2})  # typo: extra="forbid"
    with pytest.raises(ValidationError, match="name"):
        ModelOptions(model="x", name="Has Spaces")
    opts = ServeOptions(models=[{"model": "x", "autoscaling": {"max_replicas": 3}}])
    assert ServeOptions.model_validate_json(opts.model_dump_json()) == opts


def test_limits_the_model_cannot_honour_fail_when_the_app_is_built(tiny):
    spec = tiny.spec
    with pytest.raises(zoo.SpecError, match="exceeds the 1000 steps"):
        ModelRules.build("m", spec, Limits(max_steps=2000))
    with pytest.raises(zoo.SpecError, match="unknown solver kinds.*plms"):
        ModelRules.build("m", spec, Limits(solvers=["ddim", "plms"]))
    with pytest.raises(zoo.SpecError, match="excludes the model's default solver 'ddim'"):
        ModelRules.build("m", spec, Limits(solvers=["ddpm"]))
    with pytest.raises(zoo.SpecError, match="generates only 16x16"):
        ModelRules.build("m", spec, Limits(sizes=[16, 32]))
    rules = ModelRules.build("m", spec, Limits())
    assert rules.limits.max_steps == 1000 and rules.limits.solvers == solver_kinds() and rules.limits.sizes == [16]


def test_few_step_models_get_the_1_2_4_step_strip(tiny):
    """compare_steps follows the solver's few_step trait (every solver of the registry), capped by max_steps."""
    from components.solvers import SOLVERS

    few = [k for k in SOLVERS.kinds() if SOLVERS.member(k).few_step]
    assert {"consistency", "lcm"} <= set(few)
    lcm = catalog.get("lcm-tiny").model
    assert ModelRules.build("lcm", lcm, Limits()).info("/v1/models/lcm/generate").compare_steps == [1, 2, 4]
    assert ModelRules.build("lcm", lcm, Limits(max_steps=4)).info("/x").compare_steps == [1, 2, 4]
    assert ModelRules.build("m", tiny.spec, Limits()).info("/x").compare_steps == []
    for kind in SOLVERS.default_kinds():
        spec = tiny.spec.model_copy(update={"sampling": tiny.spec.sampling.model_copy(update={"solver": SOLVERS.parse(kind)})})
        info = ModelRules.build("m", spec, Limits()).info("/x")
        assert info.compare_steps == ([1, 2, 4] if kind in few else []), kind


def test_request_checks_name_every_bad_field(tiny, tiny_cond):
    rules = ModelRules.build("digits", tiny.spec, Limits(max_n=4, max_steps=20))
    bad = GenerateRequest(n=5, steps=21, solver="plms", label=1, guidance=2.0, height=8)
    with pytest.raises(RequestError) as e:
        rules.check(bad)
    assert {x.field for x in e.value.errors} == {"n", "steps", "solver", "label", "guidance", "height"}
    assert "max_n=4" in str(e.value) and "unknown solver 'plms'" in str(e.value)
    with pytest.raises(RequestError, match=r"solver.eta"):
        rules.check(GenerateRequest(solver={"kind": "ddim", "eta": 2}))
    ok = rules.check(GenerateRequest(n=2))
    assert (ok.n, ok.steps, json.loads(ok.solver)) == (2, tiny.spec.sampling.steps, {"kind": "ddim", "eta": 0.0})
    assert 0 <= ok.seed < 2**63 and rules.check(GenerateRequest(seed=5)).seed == 5
    # equal solvers given differently batch together
    assert rules.check(GenerateRequest(solver="ddim")).key() == rules.check(GenerateRequest(solver={"kind": "ddim", "eta": 0})).key()
    cond = ModelRules.build("cond", tiny_cond.spec, Limits())
    with pytest.raises(RequestError, match=r"label=10 is outside this model's classes \[0, 10\)"):
        cond.check(GenerateRequest(label=10))
    with pytest.raises(RequestError, match="takes no prompt"):
        cond.check(GenerateRequest(prompt="a cat"))
    assert cond.check(GenerateRequest(label=3, guidance=1.5)).guidance == 1.5
    with pytest.raises(ValidationError, match="n"):
        GenerateRequest.model_validate({"n": "3"}, strict=True)  # no silent "3" -> 3


def test_groups_split_by_settings_and_by_rows():
    jobs = [job(1, 2), job(2, 3), job(3, steps=5), job(4, 4), job(5, label=2)]
    assert groups(jobs, max_images=8) == [[0, 1], [3], [2], [4]]
    assert groups(jobs, max_images=9) == [[0, 1, 3], [2], [4]]


def test_a_batched_request_gets_the_images_it_would_get_alone(tiny, tiny_cond):
    jobs = [job(11, 2), job(12, 1), job(13, 3, steps=4)]
    out = run_batch(tiny, jobs, max_images=16)
    assert [o.batch_requests for o in out] == [2, 2, 1] and [o.batch_images for o in out] == [3, 3, 3]
    for j, o in zip(jobs, out):
        alone = tiny.sample(j.n, steps=j.steps, solver="ddim", seed=j.seed).numpy()
        np.testing.assert_allclose(o.images, alone, atol=1e-5)
    jobs = [job(21, 2, label=3, guidance=1.0), job(22, 1, label=5, guidance=1.0)]
    out = run_batch(tiny_cond, jobs, max_images=16)
    assert out[0].batch_requests == 2
    for j, o in zip(jobs, out):
        alone = tiny_cond.sample(j.n, steps=j.steps, solver="ddim", seed=j.seed, labels=j.label, guidance=1.0).numpy()
        np.testing.assert_allclose(o.images, alone, atol=1e-5)


def test_a_request_that_breaks_the_model_fails_alone(tiny_cond, tiny):
    model = faulty(zoo.build("ddpm-digits", **tiny_overrides(**CLASSES)).eval(), fail_label=7)
    model.load_state_dict(tiny_cond.state_dict())
    jobs = [job(1, label=2), job(2, label=7), job(3, label=4)]
    out = run_batch(model, jobs, max_images=16)
    assert out[1].images is None and "simulated failure" in out[1].error
    for j, o in zip([jobs[0], jobs[2]], [out[0], out[2]]):
        assert o.error is None
        np.testing.assert_allclose(o.images, tiny_cond.sample(1, steps=3, solver="ddim", seed=j.seed, labels=j.label).numpy(), atol=1e-5)
    broken = zoo.build("ddpm-digits", **tiny_overrides())
    broken.load_state_dict(tiny.state_dict())
    with torch.no_grad():
        next(broken.denoiser.parameters()).fill_(float("nan"))
    (o,) = run_batch(broken, [job(1)], max_images=4)
    assert o.images is None and "non-finite" in o.error


def test_encodings_round_trip():
    images = np.random.default_rng(0).random((3, 1, 16, 16), dtype=np.float32)
    np.testing.assert_array_equal(encoding.from_npy(encoding.npy(images)), images)
    back = encoding.from_png(encoding.png(images[0]))
    assert back.shape == (1, 16, 16) and np.abs(back - images[0]).max() <= 0.5 / 255 + 1e-6
    rgb = np.random.default_rng(1).random((2, 3, 8, 8), dtype=np.float32)
    assert encoding.from_png(encoding.png_grid(rgb)).shape == (3, 8 + 2, 2 * 8 + 3)  # 1 px padding
    import base64

    assert [base64.b64decode(b) for b in encoding.base64_pngs(images)] == [encoding.png(im) for im in images]


def test_exported_config_is_a_valid_ray_serve_config_and_builds(tmp_path):
    from ray.serve._private.api import call_user_app_builder_with_args_if_necessary
    from ray.serve.schema import ServeDeploySchema
    from ray._common.utils import import_attr

    from serve.config import IMPORT_PATH, rayservice, serve_config, to_yaml

    weights = untrained_weights(str(tmp_path / "w.safetensors"))
    options = ServeOptions(models=[
        {"model": "ddpm-digits", "name": "digits", "weights": weights, "overrides": tiny_overrides(),
         "autoscaling": {"min_replicas": 1, "max_replicas": 4, "target_ongoing_requests": 2}, "resources": {"num_cpus": 0.5}},
        {"model": "ddpm-digits", "name": "digits-b", "weights": weights, "overrides": tiny_overrides(), "replicas": 2},
    ])
    config, warnings = serve_config(options)
    assert any("local path" in w for w in warnings)
    parsed = ServeDeploySchema.model_validate(yaml.safe_load(to_yaml(config, warnings)))  # Ray's own schema
    (application,) = parsed.applications
    deployments = {d.name: d for d in application.deployments}
    assert set(deployments) == {"ingress", "model-digits", "model-digits-b"}
    assert deployments["model-digits"].autoscaling_config["max_replicas"] == 4
    assert deployments["model-digits"].ray_actor_options.num_cpus == 0.5
    assert deployments["model-digits-b"].num_replicas == 2
    # what Ray does with the file: import the builder, validate args into ServeOptions, build
    builder = import_attr(application.import_path)
    assert application.import_path == IMPORT_PATH
    built = call_user_app_builder_with_args_if_necessary(builder, application.args)
    assert type(built).__name__ == "Application"
    assert ServeOptions.model_validate(application.args).models[0].name == "digits"
    manifest = rayservice(config, image="registry.example/zoo:1")
    assert manifest["kind"] == "RayService" and manifest["spec"]["rayClusterConfig"]["enableInTreeAutoscaling"]
    inner = ServeDeploySchema.model_validate(yaml.safe_load(manifest["spec"]["serveConfigV2"]))
    assert inner.applications[0].args == application.args


def test_zoo_serve_cli_exports_and_reports_errors(tmp_path):
    runner = CliRunner()
    weights = untrained_weights(str(tmp_path / "w.safetensors"))
    out = tmp_path / "serve.yaml"
    sets = [x for k, v in tiny_overrides().items() for x in ("--set", f"{k}={json.dumps(v)}")]
    r = runner.invoke(app, ["serve", "ddpm-digits", "--weights", weights, *sets, "--replicas", "1-3", "--cpus", "0.5",
                            "--max-n", "8", "--export", str(out)])
    assert r.exit_code == 0, r.output
    body = yaml.safe_load(out.read_text())
    model = body["applications"][0]["args"]["models"][0]
    assert model["autoscaling"]["max_replicas"] == 3 and model["limits"]["max_n"] == 8
    r = runner.invoke(app, ["serve", "ddpm-digitz", "--export", str(out)])
    assert r.exit_code == 2 and "did you mean 'ddpm-digits'" in r.stderr
    r = runner.invoke(app, ["serve", "ddpm-digits", "--export", str(out)])
    assert r.exit_code == 2 and "no weights to serve" in r.stderr
    r = runner.invoke(app, ["serve", "ddpm-digits", "--replicas", "many"])
    assert r.exit_code == 2 and "MIN-MAX" in r.output


def test_zoo_serve_arguments_become_typed_options(tiny):
    from serve.run import options_from

    opts, memory = options_from(("runs/x", tiny), replicas=2, limits={"max_n": 4})
    assert [m.replicas for m in opts.models] == [2, 2] and [m.limits.max_n for m in opts.models] == [4, 4]
    assert memory == {1: tiny} and opts.models[1].model == "memory:ddpm-digits"
    # a Model with options of its own: they override the shared ones for it alone
    opts, memory = options_from(("runs/x", {"model": tiny, "name": "mine", "limits": {"max_n": 2}}), limits={"max_n": 4})
    assert memory == {1: tiny} and opts.models[1].model == "memory:ddpm-digits" and opts.models[1].name == "mine"
    assert [m.limits.max_n for m in opts.models] == [4, 2]
    with pytest.raises(TypeError, match="name= and weights= apply to one model"):
        options_from(("a", "b"), name="x")
    with pytest.raises(TypeError, match=r"unknown options \['replica'\]"):
        options_from(("a",), replica=2)
    with pytest.raises(ValidationError, match="max_replicas"):
        options_from(("a",), autoscaling={"min_replicas": 2, "max_replicas": 1})
