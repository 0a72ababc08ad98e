"""``zoo.serve`` and ``zoo.client``: thin entry points that import Ray only when serving."""

from __future__ import annotations

from typing import Any


def serve(*models: Any, **kwargs: Any):
    """Deploy models as a Ray Serve application (see serve.run.serve); returns a Served."""
    from serve.run import serve as _serve

    return _serve(*models, **kwargs)


def client(url: str, timeout: float = 120.0, api_key: str | None = None):
    """A client of a served zoo at ``url`` (e.g. http://127.0.0.1:8000): models(), generate(), ...
    ``api_key``: the server's key, if it has one (default: the ZOO_API_KEY variable)."""
    from serve.client import Client

    return Client(url, timeout=timeout, api_key=api_key)
