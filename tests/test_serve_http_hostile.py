"""Hostile and heavy requests over real HTTP on 127.0.0.1 (Serve's proxy on a free port): 4xx
for bodies that used to be 500s, the compute budget, a 504 past a model's timeout, the API key
(health stays open), and zoo.serve refusing a model whose warm-up is not finite, with the reason."""

from __future__ import annotations

import json
import math

import pytest
import torch

import zoo
from tests.conftest import tiny_overrides
from zoo import checkpoint as ckpt

pytestmark = pytest.mark.slow

KEY = "test-key-0123456789"


@pytest.fixture(scope="module")
def served(serve_instance, tmp_path_factory):
    folder = tmp_path_factory.mktemp("hostile")
    run = zoo.get("ddpm-digits", **tiny_overrides())
    torch.manual_seed(0)
    sd = zoo.build("ddpm-digits", **tiny_overrides()).trainable_state_dict()
    path = str(ckpt.write(folder / "step_00000001", run.model_dump_json(), sd, sd, {"state": {}, "param_groups": []}, 1))
    (folder / "key").write_text(KEY + "\n")
    s = zoo.serve(
        {"model": path, "name": "digits"},
        {"model": path, "name": "slow", "limits": {"timeout_s": 0.001}},
        resources={"num_cpus": 0.25}, warmup_steps=1, ingress={"api_key_file": str(folder / "key")},
    )
    yield s
    s.shutdown()


def post(client, name, body=None, raw=None):
    status, headers, blob = client.request("POST", f"/v1/models/{name}/generate", body, raw=raw)
    return status, headers, json.loads(blob) if headers.get("content-type", "").startswith("application/json") else blob


def test_api_key_protects_generate_and_listing_not_health(served):
    anonymous = zoo.client(served.url, api_key="")
    assert anonymous.request("GET", "/healthz")[0] == 200 and anonymous.request("GET", "/readyz")[0] == 200
    assert anonymous.request("GET", "/v1/models")[0] == 401
    status, headers, body = post(anonymous, "digits", {"n": 1, "steps": 2})
    assert status == 401 and "API key" in body["detail"] and "Bearer" in headers.get("www-authenticate", "")
    wrong = zoo.client(served.url, api_key="nope")
    assert post(wrong, "digits", {"n": 1, "steps": 2})[0] == 401
    c = zoo.client(served.url, api_key=KEY)
    models = json.loads(c.request("GET", "/v1/models")[2])["models"]
    assert {m["name"]: m["limits"]["timeout_s"] for m in models} == {"digits": 120.0, "slow": 0.001}
    assert c.generate("digits", n=1, steps=2, seed=0).images.shape == (1, 1, 16, 16)


@pytest.mark.parametrize("raw,problem", [
    (b'{"n": ' + b"1" * 5000 + b"}", "digits"),
    (b'{"n": ' + b"[" * 30000 + b"]" * 30000 + b"}", "nested deeper"),
    (b'{"n": 1, "solver": {"kind": "euler", "s_churn": Infinity}}', "Infinity"),
])
def test_hostile_bodies_are_400s(served, raw, problem):
    status, _, body = post(zoo.client(served.url, api_key=KEY), "digits", raw=raw)
    assert status == 400 and problem in body["detail"], body


def test_out_of_range_and_over_budget_are_422s_naming_the_field(served):
    c = zoo.client(served.url, api_key=KEY)
    for solver, field in (({"kind": "euler", "s_churn": "0.5"}, "solver.s_churn"),
                          ({"kind": "heun", "s_noise": 1e308}, "solver.s_noise"),
                          ({"kind": "rk45", "rtol": 1e-13, "atol": 1e-13}, "solver.rtol")):
        status, _, body = post(c, "digits", {"n": 1, "solver": solver})
        assert status == 422 and field in [e["field"] for e in body["errors"]], body
    status, _, body = post(c, "digits", {"n": 16, "steps": 1000, "solver": "ddpm"})
    assert status == 422 and "max_nfe_rows" in body["detail"], body
    # an adaptive request that passes validation answers, and its echo is valid JSON (no inf)
    status, _, body = post(c, "digits", {"n": 1, "solver": {"kind": "rk45", "rtol": 1e-3, "atol": 1e-3}, "format": "base64"})
    assert status == 200 and math.isfinite(body["solver"]["rtol"]) and body["solver"]["max_nfe"] == 4096


def test_past_its_timeout_a_request_is_a_504(served):
    status, headers, body = post(zoo.client(served.url, api_key=KEY), "slow", {"n": 1, "steps": 50})
    assert status == 504 and "timeout_s" in body["detail"] and "retry-after" in {k.lower() for k in headers}


def test_zoo_serve_refuses_a_model_whose_warm_up_is_not_finite(served):
    broken = zoo.build("ddpm-digits", **tiny_overrides()).eval()
    with torch.no_grad():
        next(broken.denoiser.parameters()).fill_(math.nan)
    broken.name = "broken"
    with pytest.raises(zoo.ZooError, match="not finite"):
        zoo.serve(broken, app_name="broken", route_prefix="/broken", resources={"num_cpus": 0.25}, warmup_steps=1)


def test_small_requests_and_readyz_are_served_between_the_chunks_of_a_large_one(served):
    """The bound: a 1-image request waits for at most the chunk running when it arrives
    (limits.chunk_images = 4 images x NFE rows), not for the whole large request. Shown by order,
    not by timing: it is answered before a 16-image request sent earlier finishes."""
    import threading
    import time

    c = zoo.client(served.url, api_key=KEY)
    done: list[str] = []
    big = threading.Thread(target=lambda: done.append(f"big {post(c, 'digits', {'n': 16, 'steps': 250, 'solver': 'ddpm'})[0]}"))
    big.start()
    time.sleep(1.0)  # the large request's first chunk is running
    status, _, _ = c.request("GET", "/readyz")
    done.append(f"readyz {status}")
    g = c.generate("digits", n=1, steps=2, seed=1)
    done.append(f"small {g.images.shape[0]}")
    big.join()
    assert done == ["readyz 200", "small 1", "big 200"], done


def test_openapi_json_publishes_each_models_limits(served):
    status, _, blob = zoo.client(served.url).request("GET", "/openapi.json")
    op = json.loads(blob)["paths"]["/v1/models/{name}/generate"]["post"]
    assert status == 200 and op["x-zoo-models"]["slow"]["timeout_s"] == 0.001 and op["x-zoo-models"]["digits"]["max_n"] == 16
