"""A small Python client for a served zoo (standard library HTTP; no Ray needed).

    c = zoo.client("http://127.0.0.1:8000")
    c.models()                                   # what is served, with limits
    out = c.generate("ddpm-digits", n=4, steps=50, seed=0)
    out.images                                   # torch (4, C, H, W) in [0, 1], as model.sample returns
    zoo.save_grid(out.images, "grid.png")

Errors come back as ServeError with the HTTP status and the fields the server named.
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any

import torch

from serve.encoding import NPY, from_npy
from zoo.errors import ZooError


class ServeError(ZooError):
    def __init__(self, status: int, detail: str, errors: list[dict] | None = None):
        self.status, self.detail, self.errors = status, detail, errors or []
        self.fields = [e.get("field") for e in self.errors if e.get("field")]
        super().__init__(f"HTTP {status}: {detail}")


@dataclass
class Generation:
    images: torch.Tensor  # (n, C, H, W) float32 in [0, 1]
    model: str
    seed: int
    steps: int
    batch_requests: int
    batch_images: int
    replica: str
    elapsed_s: float
    headers: dict[str, str] = field(default_factory=dict, repr=False)


class Client:
    def __init__(self, url: str, timeout: float = 120.0, api_key: str | None = None):
        """``api_key``: sent as ``Authorization: Bearer`` (default: the ZOO_API_KEY variable, if set)."""
        self.url, self.timeout = url.rstrip("/"), timeout
        self.api_key = api_key if api_key is not None else (os.environ.get("ZOO_API_KEY") or None)

    # -- plumbing -------------------------------------------------------------------------------
    def request(self, method: str, path: str, body: Any = None, raw: bytes | None = None) -> tuple[int, dict, bytes]:
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        req = urllib.request.Request(self.url + path, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        if self.api_key:
            req.add_header("Authorization", f"Bearer {self.api_key}")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as r:
                return r.status, dict(r.headers), r.read()
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers), e.read()

    def _json(self, method: str, path: str, body: Any = None) -> Any:
        status, _, blob = self.request(method, path, body)
        if status >= 400:
            raise _error(status, blob)
        return json.loads(blob)

    # -- API ------------------------------------------------------------------------------------
    def health(self) -> bool:
        try:
            return self.request("GET", "/healthz")[0] == 200
        except OSError:
            return False

    def ready(self) -> dict:
        status, _, blob = self.request("GET", "/readyz")
        return json.loads(blob)

    def wait_ready(self, timeout: float = 120.0) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            try:
                state = self.ready()
                if state.get("ready"):
                    return state
            except (OSError, json.JSONDecodeError):
                state = {}
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.url} not ready after {timeout:.0f} s: {state}")
            time.sleep(0.5)

    def models(self) -> list[dict]:
        return self._json("GET", "/v1/models")["models"]

    def model(self, name: str) -> dict:
        return self._json("GET", f"/v1/models/{name}")

    def generate(self, model: str | None = None, n: int = 1, **params: Any) -> Generation:
        """Images from ``model`` (the only served one when None); params as in the HTTP API:
        steps, solver, guidance, seed, label, prompt, height, width."""
        if model is None:
            served = [m["name"] for m in self.models()]
            if len(served) != 1:
                raise ValueError(f"several models are served ({', '.join(served)}): name one")
            model = served[0]
        body = {"n": n, **{k: v for k, v in params.items() if v is not None}, "format": "npy"}
        status, headers, blob = self.request("POST", f"/v1/models/{model}/generate", body)
        if status >= 400:
            raise _error(status, blob)
        h = {k.lower(): v for k, v in headers.items()}
        if h.get("content-type") != NPY:
            raise ServeError(status, f"expected {NPY}, got {h.get('content-type')}")
        return Generation(
            images=torch.from_numpy(from_npy(blob)), model=h["x-zoo-model"], seed=int(h["x-zoo-seed"]),
            steps=int(h["x-zoo-steps"]), batch_requests=int(h["x-zoo-batch-requests"]),
            batch_images=int(h["x-zoo-batch-images"]), replica=h["x-zoo-replica"],
            elapsed_s=float(h["x-zoo-elapsed-s"]), headers=h,
        )


def _error(status: int, blob: bytes) -> ServeError:
    try:
        body = json.loads(blob)
        return ServeError(status, body.get("detail", str(body)), body.get("errors"))
    except (json.JSONDecodeError, AttributeError):
        return ServeError(status, blob[:500].decode(errors="replace"))
