"""Serving catalog models behind autoscaled Ray Serve endpoints, from the spec that trained them.

    served = zoo.serve("runs/ddpm-digits-ab12", replicas=2)     # serve/run.py
    zoo.client(served.url).generate(n=4, seed=0)                # serve/client.py

One concern per file: options (typed Serve options and limits), source (where a model comes
from), limits (request checks), batching (compatible requests as one network call),
deployment (the model replica), ingress (FastAPI), page (the web page), encoding (png/base64/
npy), app (the application builder), config (Serve config / RayService export), run
(zoo.serve), client (zoo.client), cli (`zoo serve`). Importing this package does not import Ray.
"""

from serve.options import (
    AutoscalingOptions, BatchingOptions, IngressOptions, Limits, ModelOptions, ResourceOptions, ServeOptions,
)

__all__ = [
    "AutoscalingOptions", "BatchingOptions", "IngressOptions", "Limits", "ModelOptions", "ResourceOptions",
    "ServeOptions",
]
