"""Hostile and heavy requests, without a cluster: bodies that broke the JSON parser, solver fields
that are not finite or in range, the compute budget, readiness that means ready, load errors
that name the file, and the optional API key."""

from __future__ import annotations

import json
import math

import pytest
import torch

import zoo
from serve.batching import Job
from serve.deployment import ModelServer
from serve.ingress import Failure, api_key, authorize, parse_json
from serve.limits import ModelRules, RequestError
from serve.options import IngressOptions, Limits, ModelOptions
from serve.schemas import GenerateRequest
from serve.source import Source, in_memory
from tests.conftest import tiny_overrides
from zoo import checkpoint as ckpt


@pytest.fixture(scope="module")
def tiny() -> zoo.Model:
    torch.manual_seed(0)
    return zoo.build("ddpm-digits", **tiny_overrides()).eval()


@pytest.fixture(scope="module")
def rules(tiny) -> ModelRules:
    return ModelRules.build("m", tiny.spec, Limits())


@pytest.fixture()
def keep_threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


@pytest.mark.parametrize("body,problem", [
    (b'{"n": ' + b"9" * 5000 + b"}", "digits"),
    (b"[" * 30000 + b"]" * 30000, "nested deeper"),
    (b'{"n": 1, "solver": {"kind": "euler", "s_churn": Infinity}}', "Infinity is not a JSON number"),
    (b'{"n": NaN}', "NaN is not a JSON number"),
    (b"\xff\xfe", "not valid JSON"),
])
def test_hostile_json_is_a_400_naming_the_problem(body, problem):
    with pytest.raises(Failure, match=problem) as e:
        parse_json(body)
    assert e.value.status == 400
    deep_string = b'{"prompt": "' + b"[" * 100 + b'"}'  # brackets inside a string are not nesting
    assert parse_json(deep_string) == {"prompt": "[" * 100}


@pytest.mark.parametrize("solver,field", [
    ({"kind": "euler", "s_churn": "0.5"}, "solver.s_churn"),  # a string is not a number over HTTP
    ({"kind": "euler", "s_churn": math.inf}, "solver.s_churn"),
    ({"kind": "heun", "s_noise": 1e308}, "solver.s_noise"),
    ({"kind": "rk45", "rtol": math.inf}, "solver.rtol"),
    ({"kind": "rk45", "rtol": 1e-13, "atol": 1e-13}, "solver.rtol"),  # below min_tolerance
    ({"kind": "rk45", "max_nfe": 100000}, "solver.max_nfe"),  # past the compute budget
    ({"kind": "ddim", "eta": math.nan}, "solver.eta"),
])
def test_solver_fields_are_finite_in_range_and_strict(rules, solver, field):
    with pytest.raises(RequestError) as e:
        rules.check(GenerateRequest(solver=solver))
    assert field in [x.field for x in e.value.errors], e.value.errors


def test_the_compute_budget_bounds_every_request(rules):
    lim = rules.limits
    with pytest.raises(RequestError, match="compute budget max_nfe_rows"):
        rules.check(GenerateRequest(n=16, steps=1000, solver="ddpm"))  # 16000 rows > 4096
    with pytest.raises(RequestError, match="compute budget"):
        rules.check(GenerateRequest(n=16, steps=200, solver="heun"))  # 2 calls per step: 6400 rows
    assert rules.check(GenerateRequest(n=4, steps=1000, solver="ddpm")).steps == 1000  # 4000 rows fit
    job = rules.check(GenerateRequest(n=8, solver="rk45"))  # adaptive: max_nfe filled from the budget
    assert json.loads(job.solver)["max_nfe"] == lim.max_nfe_rows // 8
    for n in (1, 3, 16):  # every request that passes validation encodes as JSON (no inf/NaN to echo)
        for s in ("rk45", "heun", {"kind": "euler", "s_churn": 10.0, "s_noise": 1.007}):
            job = rules.check(GenerateRequest(n=n, steps=20, solver=s))
            json.dumps(json.loads(job.solver), allow_nan=False)


def test_limits_are_published_with_the_model(rules):
    limits = rules.info("/v1/models/m/generate").model_dump()["limits"]
    assert {"max_n", "max_steps", "solvers", "max_nfe_rows", "min_tolerance", "timeout_s"} <= set(limits)
    assert limits["max_nfe_rows"] == 4096


def test_warm_up_that_is_not_finite_means_not_ready(tiny, keep_threads):
    broken = zoo.build("ddpm-digits", **tiny_overrides()).eval()
    with torch.no_grad():
        next(broken.denoiser.parameters()).fill_(math.nan)
    server = ModelServer(in_memory(broken, ModelOptions(model="memory:broken", name="broken")))
    state = server.ready()
    assert state["ready"] is False and "not finite" in state["error"]
    out = asyncio_run(server.generate(Job(n=1, steps=2, solver=json.dumps({"kind": "ddim", "eta": 0.0}), guidance=0.0, seed=0)))
    assert out.status == 503 and "not finite" in out.error
    good = ModelServer(in_memory(tiny, ModelOptions(model="memory:tiny", name="tiny")))
    assert good.ready()["ready"] is True


def test_a_load_error_names_the_file_and_is_not_retried(tmp_path, keep_threads):
    run = zoo.get("ddpm-digits", **tiny_overrides())
    sd = zoo.build("ddpm-digits", **tiny_overrides()).trainable_state_dict()
    folder = ckpt.write(tmp_path / "step_00000001", run.model_dump_json(), sd, sd, {"state": {}, "param_groups": []}, 1)
    blob = bytearray((folder / "ema.safetensors").read_bytes())
    blob[-1] ^= 0xFF  # same size, wrong hash
    (folder / "ema.safetensors").write_bytes(bytes(blob))
    server = ModelServer(Source("m", run.model, ModelOptions(model=str(folder), name="m")))  # no exception: not retried
    state = server.ready()
    assert state["ready"] is False and "ema.safetensors" in state["error"] and "corrupt" in state["error"]


def test_api_key_from_env_or_file_compared_in_constant_time(tmp_path, monkeypatch):
    monkeypatch.delenv("ZOO_API_KEY", raising=False)
    assert api_key(IngressOptions()) is None
    authorize(None, None)  # no key: open
    monkeypatch.setenv("ZOO_API_KEY", "s3cret")
    key = api_key(IngressOptions())
    assert key == b"s3cret"
    for header in (None, "Bearer wrong", "s3cret", "Basic s3cret"):
        with pytest.raises(Failure) as e:
            authorize(header, key)
        assert e.value.status == 401 and e.value.headers["WWW-Authenticate"].startswith("Bearer")
    authorize("Bearer s3cret", key)
    path = tmp_path / "key"
    path.write_text("from-file\n")
    assert api_key(IngressOptions(api_key_file=str(path))) == b"from-file"
    with pytest.raises(RuntimeError, match="api_key_file"):
        api_key(IngressOptions(api_key_file=str(tmp_path / "missing")))


def asyncio_run(coro):
    import asyncio

    return asyncio.new_event_loop().run_until_complete(coro)


@pytest.mark.parametrize("solver", [{"kind": "ddpm", "variance": "small"}, {"kind": "ddim", "eta": 0.0}])
def test_chunks_of_a_request_make_exactly_its_images(tiny, solver):
    from serve.batching import run_batch

    whole = Job(n=7, steps=3, solver=json.dumps(solver, sort_keys=True), guidance=0.0, seed=42)
    parts = whole.chunks(3)
    assert [(p.n, p.first, p.whole) for p in parts] == [(3, 0, 7), (3, 3, 7), (1, 6, 7)] and whole.chunks(7) == [whole]
    ref = run_batch(tiny, [whole], 64)[0].images
    # chunks run alone and batched with another request: the same rows of the same images
    other = Job(n=2, steps=3, solver=whole.solver, guidance=0.0, seed=5)
    got = [run_batch(tiny, [p], 64)[0].images for p in parts[:2]] + [run_batch(tiny, [other, parts[2]], 64)[1].images]
    import numpy as np

    np.testing.assert_allclose(np.concatenate(got), ref, atol=1e-5, rtol=0)


def test_the_openapi_schema_carries_each_models_limits(rules):
    from serve.ingress import api, with_limits

    schema = with_limits(api.openapi(), {"m": rules})
    op = schema["paths"]["/v1/models/{name}/generate"]["post"]
    assert op["x-zoo-models"]["m"]["max_n"] == rules.limits.max_n and "m`: n <= 16" in op["description"]
    assert [p["schema"]["enum"] for p in op["parameters"] if p["name"] == "name"] == [["m"]]
    assert "x-zoo-models" not in api.openapi()["paths"]["/v1/models/{name}/generate"]["post"]  # a copy
