"""``zoo.serve`` and ``zoo.client``: thin entry points that import Ray only when serving."""

from __future__ import annotations

from typing import Any


def serve(*models: Any, **kwargs: Any):
    """Deploy models as a Ray Serve application (see serve.run.serve); returns a Served."""
    from serve.run import serve as _serve

    return _serve(*models, **kwargs)


def client(url: str, timeout: float = 120.0):
    """A client of a served zoo at ``url`` (e.g. http://127.0.0.1:8000): models(), generate(), ..."""
    from serve.client import Client

    return Client(url, timeout=timeout)
