"""Serving through real HTTP on 127.0.0.1: one app with five models (a checkpoint on local disk,
a class-conditional checkpoint on S3 (moto), an in-memory model that breaks on purpose, an
in-memory text-to-image latent model, ldm-tiny with random weights, and an in-memory latent
consistency model, lcm-tiny with random weights, served with its own limits),
checked against ``model.sample`` in process, under 16 concurrent clients, with bad requests,
and through the web page in a real headless Chromium."""

from __future__ import annotations

import base64
import json
import shutil
import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import zoo
from serve.encoding import from_png
from tests.serve_support import faulty, train_tiny
from zoo import checkpoint as ckpt

pytestmark = pytest.mark.slow

LIMITS = {"max_n": 8, "max_steps": 50, "solvers": ["ddim", "ddpm"], "max_body_bytes": 4096}


@pytest.fixture(scope="module")
def runs(tmp_path_factory, s3_server):
    import s3fs

    out = tmp_path_factory.mktemp("serve-runs")
    digits = train_tiny(str(out))
    cond = train_tiny(str(out), conditional=True)
    fs = s3fs.S3FileSystem()
    if not fs.exists("zoo-serve"):
        fs.mkdir("zoo-serve")
    url = "s3://zoo-serve/cond/" + cond.checkpoint.rstrip("/").rsplit("/", 1)[-1]
    ckpt.upload(cond.checkpoint, url)
    torch.manual_seed(0)
    text = zoo.build("ldm-tiny")  # random VAE, UNet and text tower: what matters is that the prompt travels
    text.name = "text"
    lcm = zoo.build("lcm-tiny")  # its own solver (lcm, 4 steps) and w as a network input
    return SimpleNamespace(digits=digits.checkpoint, cond=url, digits_model=zoo.load(digits.checkpoint), cond_model=zoo.load(url),
                           text_model=text, lcm_model=lcm)


@pytest.fixture(scope="module")
def served(serve_instance, runs):
    broken = faulty(zoo.load(runs.cond), fail_label=7)
    broken.name = "faulty"
    s = zoo.serve(
        {"model": runs.digits, "name": "digits"},
        {"model": runs.cond, "name": "cond"},
        broken,
        runs.text_model,
        {"model": runs.lcm_model, "name": "lcm", "limits": {**LIMITS, "solvers": ["lcm"]}},
        resources={"num_cpus": 0.25}, limits=LIMITS, batching={"max_images": 32, "wait_s": 0.05},
    )
    yield s
    s.shutdown()


def post(client, name: str, body, raw: bytes | None = None):
    status, headers, blob = client.request("POST", f"/v1/models/{name}/generate", body, raw=raw)
    return status, headers, (json.loads(blob) if headers.get("content-type", "").startswith("application/json") else blob)


def test_same_seed_same_images_as_model_sample_in_process(served, runs):
    c = served.client()
    ref = runs.digits_model.sample(3, steps=5, seed=7)
    g = c.generate("digits", n=3, steps=5, seed=7)
    assert (g.model, g.seed, g.steps) == ("digits", 7, 5)
    torch.testing.assert_close(g.images, ref, atol=1e-5, rtol=0)
    # the PNG and base64 formats carry the same images at 8 bits
    status, _, blob = post(c, "digits", {"n": 1, "steps": 5, "seed": 7, "format": "png"})
    assert status == 200 and np.abs(from_png(blob) - ref[0].numpy()).max() <= 0.51 / 255
    status, _, body = post(c, "digits", {"n": 3, "steps": 5, "seed": 7, "format": "base64"})
    assert status == 200 and body["seed"] == 7 and body["solver"] == {"kind": "ddim", "eta": 0.0}
    pngs = np.stack([from_png(base64.b64decode(b)) for b in body["images"]])
    assert np.abs(pngs - ref.numpy()).max() <= 0.51 / 255
    # a seed the server picks comes back and replays the same images
    first = c.generate("digits", n=2, steps=5)
    again = c.generate("digits", n=2, steps=5, seed=first.seed)
    torch.testing.assert_close(first.images, again.images, atol=1e-5, rtol=0)
    # another solver, and the class-conditional model read from S3, with guidance
    g = c.generate("digits", n=2, steps=10, seed=3, solver={"kind": "ddim", "eta": 1.0})
    torch.testing.assert_close(g.images, runs.digits_model.sample(2, steps=10, seed=3, solver={"kind": "ddim", "eta": 1.0}), atol=1e-5, rtol=0)
    g = c.generate("cond", n=2, steps=5, seed=5, label=3, guidance=1.5)
    torch.testing.assert_close(g.images, runs.cond_model.sample(2, steps=5, seed=5, labels=3, guidance=1.5), atol=1e-5, rtol=0)
    # the text-to-image model takes a prompt; another prompt, other images
    g = c.generate("text", n=2, steps=4, seed=5, prompt="a handwritten digit seven", guidance=2.0)
    ref = runs.text_model.sample(2, steps=4, seed=5, prompt="a handwritten digit seven", guidance=2.0)
    torch.testing.assert_close(g.images, ref, atol=1e-5, rtol=0)
    other = c.generate("text", n=2, steps=4, seed=5, prompt="a handwritten digit one", guidance=2.0)
    assert not torch.allclose(other.images, ref, atol=1e-3)
    # the LCM with no steps or solver given: its own lcm sampler at 4 steps, w as its input
    g = c.generate("lcm", n=2, seed=3, prompt="a handwritten digit two", guidance=4.0)
    assert g.steps == 4
    ref = runs.lcm_model.sample(2, seed=3, prompt="a handwritten digit two", guidance=4.0)
    torch.testing.assert_close(g.images, ref, atol=1e-5, rtol=0)


def test_models_are_listed_with_limits_and_the_api_is_described(served, runs):
    c = served.client()
    models = {m["name"]: m for m in c.models()}
    assert set(models) == {"digits", "cond", "faulty", "text", "lcm"}
    assert models["digits"]["limits"]["max_n"] == 8 and models["digits"]["limits"]["max_steps"] == 50
    assert models["cond"]["conditioning"] == "label" and models["cond"]["num_classes"] == 10
    assert models["digits"]["conditioning"] == "none" and not models["digits"]["guidance"]
    assert models["text"]["conditioning"] == "prompt" and models["text"]["guidance"]
    # an LCM defaults to its own solver and steps, and the page compares 1, 2 and 4 steps of it
    assert models["lcm"]["default_solver"]["kind"] == "lcm" and models["lcm"]["default_steps"] == 4
    assert models["lcm"]["compare_steps"] == [1, 2, 4] and models["lcm"]["limits"]["solvers"] == ["lcm"]
    assert all(models[m]["compare_steps"] == [] for m in ("digits", "cond", "faulty", "text"))
    full = c.model("cond")
    assert full["spec"] == runs.cond_model.spec.model_dump(mode="json")  # the spec that trained it serves it
    status, _, blob = c.request("GET", "/openapi.json")
    api = json.loads(blob)
    gen = api["paths"]["/v1/models/{name}/generate"]["post"]
    assert status == 200 and "steps" in gen["requestBody"]["content"]["application/json"]["schema"]["properties"]
    assert {"/healthz", "/readyz", "/v1/models"} <= set(api["paths"])
    openapi_spec_validator = pytest.importorskip("openapi_spec_validator")
    openapi_spec_validator.validate(api)  # a schema other tools can generate clients from
    assert c.health() and c.ready()["ready"] and set(c.ready()["models"]) == {"digits", "cond", "faulty", "text", "lcm"}
    status, headers, blob = c.request("GET", "/")
    assert status == 200 and b"<title>diffusion-zoo</title>" in blob


@pytest.mark.parametrize(
    "name, body, status, names",
    [
        ("digits", b'{"n": 2,', 400, "not valid JSON"),
        ("digitz", b'{"n": 1}', 404, "unknown model 'digitz'; did you mean 'digits'"),
        ("digits", b'{"n": 9}', 422, "n=9 exceeds this model's limit max_n=8"),
        ("digits", b'{"steps": 51}', 422, "steps=51 exceeds this model's limit max_steps=50"),
        ("digits", b'{"solver": "heun2"}', 422, "unknown solver 'heun2'"),
        ("digits", b'{"solver": {"kind": "ddim", "eta": 7}}', 422, "solver.eta"),
        ("digits", b'{"n": "2"}', 422, "n: Input should be a valid integer"),
        ("digits", b'{"nn": 2}', 422, "nn: unknown field"),
        ("digits", b'{"label": 3}', 422, "label: digits takes no class label"),
        ("cond", b'{"label": 10}', 422, "label=10 is outside this model's classes [0, 10)"),
        ("digits", b'{"width": 64}', 422, "width=64 is not served; this model generates 16x16"),
        ("digits", b'{"format": "jpeg"}', 422, "format"),
        ("digits", b'{"prompt": "' + b"x" * 5000 + b'"}', 413, "limit is 4096 bytes"),
    ],
)
def test_bad_requests_are_4xx_naming_the_problem_and_the_next_request_succeeds(served, name, body, status, names):
    c = served.client()
    got, _, err = post(c, name, None, raw=body)
    assert got == status, err
    assert names in err["detail"], err
    ok, _, _ = post(c, "digits", {"n": 1, "steps": 3, "format": "npy"})
    assert ok == 200


def test_a_failure_inside_the_model_is_a_500_and_the_replica_keeps_serving(served, runs):
    c = served.client()
    good = c.generate("faulty", n=1, steps=3, seed=1, label=2)
    status, _, err = post(c, "faulty", {"n": 2, "steps": 3, "label": 7, "format": "npy"})
    assert status == 500 and "model 'faulty' failed" in err["detail"] and "simulated failure" in err["detail"]
    again = c.generate("faulty", n=1, steps=3, seed=1, label=2)
    assert again.replica == good.replica and served.replicas("faulty") == 1
    torch.testing.assert_close(again.images, runs.cond_model.sample(1, steps=3, seed=1, labels=2), atol=1e-5, rtol=0)


def test_sixteen_concurrent_clients_are_batched_and_keep_their_seeds(served, runs):
    c = served.client()
    results, errors = [], []
    deadline = time.monotonic() + 6.0

    def client(k: int) -> None:
        for i in range(40):  # bounded in count and in time
            if time.monotonic() > deadline:
                return
            steps, seed = (5 if k % 2 else 8), 1000 * k + i
            try:
                g = c.generate("digits", n=1 + k % 2, steps=steps, seed=seed)
                results.append((steps, seed, g))
            except Exception as e:  # noqa: BLE001 - every failure is reported below
                errors.append(repr(e))

    threads = [threading.Thread(target=client, args=(k,)) for k in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors[:3]
    assert len(results) >= 16
    print(f"{len(results)} requests from 16 clients; requests per network call: max {max(g.batch_requests for *_, g in results)}")
    batches = [g.batch_requests for _, _, g in results]
    assert max(batches) > 1, f"no request was batched with another: {batches}"
    # batched or not, a request's images are its own seed's (checked on the batched ones first)
    for steps, seed, g in sorted(results, key=lambda r: -r[2].batch_requests)[:16]:
        alone = runs.digits_model.sample(len(g.images), steps=steps, seed=seed)
        torch.testing.assert_close(g.images, alone, atol=1e-5, rtol=0)


CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-quic",
                 "--no-first-run", "--disable-component-update", "--disable-sync", "--window-size=1000,900"]


def test_web_page_generates_images_in_headless_chromium(served, runs, tmp_path, monkeypatch):
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and driver):
        pytest.skip("Debian's chromium and chromium-driver are not installed (`make test` installs them)")
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    monkeypatch.setenv("SE_OFFLINE", "true")  # Selenium Manager must never download a browser or driver
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in CHROMIUM_ARGS:
        options.add_argument(arg)
    browser = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=driver))
    try:
        wait = WebDriverWait(browser, 60)

        def fill(fields: dict[str, str]) -> None:
            for field, value in fields.items():
                box = browser.find_element(By.ID, field)
                box.clear()
                box.send_keys(value)

        def generate(images: int, seed: int) -> None:
            """Click Generate; wait for the status to name the seed and ``images`` decoded 16x16 images."""
            browser.find_element(By.ID, "generate").click()
            wait.until(lambda b: f"seed {seed}" in b.find_element(By.ID, "status").text and len(
                b.find_elements(By.CSS_SELECTOR, "#images img.sample")) == images and all(
                b.execute_script("return arguments[0].complete && arguments[0].naturalWidth", im) == 16
                for im in b.find_elements(By.CSS_SELECTOR, "#images img.sample")))

        def shown(within) -> np.ndarray:
            """The images shown under ``within`` (the page or one row), decoded from their data URLs."""
            srcs = [im.get_attribute("src") for im in within.find_elements(By.CSS_SELECTOR, "img.sample")]
            return np.stack([from_png(base64.b64decode(s.split(",", 1)[1])) for s in srcs])

        browser.get(served.url + "/")
        wait.until(lambda b: len(Select(b.find_element(By.ID, "model")).options) == 5)
        Select(browser.find_element(By.ID, "model")).select_by_value("cond")
        assert browser.find_element(By.ID, "label").is_displayed()
        assert not browser.find_element(By.ID, "prompt").is_displayed()
        assert not browser.find_element(By.ID, "compare").is_displayed()  # not a few-step model
        Select(browser.find_element(By.ID, "label")).select_by_value("3")
        fill({"steps": "5", "n": "4", "seed": "11", "guidance": "0"})
        generate(4, seed=11)
        browser.save_screenshot(str(tmp_path / "page.png"))
        ref = runs.cond_model.sample(4, steps=5, seed=11, labels=3).numpy()
        assert np.abs(shown(browser) - ref).max() <= 0.51 / 255  # the page shows what model.sample makes
        assert "seed 11" in browser.find_element(By.ID, "status").text
        # the text-to-image model: a prompt box instead of the class picker
        Select(browser.find_element(By.ID, "model")).select_by_value("text")
        assert browser.find_element(By.ID, "prompt").is_displayed()
        assert not browser.find_element(By.ID, "label").is_displayed()
        browser.find_element(By.ID, "prompt").send_keys("a handwritten digit seven")
        fill({"steps": "4", "n": "2", "seed": "5", "guidance": "2"})
        generate(2, seed=5)
        ref = runs.text_model.sample(2, steps=4, seed=5, prompt="a handwritten digit seven", guidance=2.0).numpy()
        assert np.abs(shown(browser) - ref).max() <= 0.51 / 255  # the typed prompt reached the model
        # a request over the limit shows the server's message naming the field
        steps = browser.find_element(By.ID, "steps")
        browser.execute_script("arguments[0].removeAttribute('max')", steps)
        steps.clear()
        steps.send_keys("999")
        browser.find_element(By.ID, "generate").click()
        wait.until(lambda b: b.find_element(By.ID, "error").text)
        assert "422" in browser.find_element(By.ID, "error").text and "max_steps=50" in browser.find_element(By.ID, "error").text
        # the LCM: one prompt and seed at 1, 2 and 4 steps, a captioned row each
        Select(browser.find_element(By.ID, "model")).select_by_value("lcm")
        assert browser.find_element(By.ID, "compare").is_selected() and not browser.find_element(By.ID, "steps").is_enabled()
        browser.find_element(By.ID, "prompt").clear()
        browser.find_element(By.ID, "prompt").send_keys("a handwritten digit three")
        fill({"n": "2", "seed": "9", "guidance": "4"})
        generate(6, seed=9)
        browser.save_screenshot(str(tmp_path / "page-lcm.png"))
        assert not browser.find_element(By.ID, "error").text
        rows = browser.find_elements(By.CSS_SELECTOR, "#images .row")
        assert [r.find_element(By.CLASS_NAME, "caption").text for r in rows] == ["1 step", "2 steps", "4 steps"]
        for row, k in zip(rows, (1, 2, 4)):
            ref = runs.lcm_model.sample(2, steps=k, seed=9, prompt="a handwritten digit three", guidance=4.0).numpy()
            assert np.abs(shown(row) - ref).max() <= 0.51 / 255, k  # each row is model.sample at its steps
    finally:
        browser.quit()
