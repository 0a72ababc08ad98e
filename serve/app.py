"""The Serve application: one ingress and one model deployment per served model, each model under
its own route (/v1/models/{name}/...), all built from typed ServeOptions.

``build`` is the application builder Ray's own tooling imports (``import_path: serve.app:build``
with the options as ``args`` in a Serve config; see serve/config.py), and the one ``zoo.serve``
runs, so a local run and a KubeRay RayService deploy the same application.
"""

from __future__ import annotations

import re
from typing import Any

from ray import serve as ray_serve
from ray.serve import Application

from serve.deployment import ModelServer
from serve.ingress import Ingress
from serve.limits import ModelRules
from serve.options import NAME_PATTERN, IngressOptions, ModelOptions, ServeOptions
from serve.source import Source, resolve
from zoo.errors import SpecError

INGRESS = "ingress"


def model_deployment_name(name: str) -> str:
    return f"model-{name}"


def model_deployment_options(name: str, opts: ModelOptions) -> dict[str, Any]:
    """What Serve gets for one model: replicas or autoscaling, resources, batching (user_config)."""
    out: dict[str, Any] = {
        "name": model_deployment_name(name),
        "ray_actor_options": opts.resources.ray_actor_options(),
        "max_ongoing_requests": opts.max_ongoing_requests,
        "max_queued_requests": opts.max_queued_requests,
        "user_config": opts.batching.model_dump(mode="json"),
    }
    if opts.autoscaling is not None:
        out["autoscaling_config"] = opts.autoscaling.autoscaling_config()
    else:
        out["num_replicas"] = opts.replicas
    return out


def ingress_deployment_options(opts: IngressOptions) -> dict[str, Any]:
    return {
        "name": INGRESS,
        "num_replicas": opts.replicas,
        "ray_actor_options": opts.resources.ray_actor_options(),
        "max_ongoing_requests": opts.max_ongoing_requests,
    }


def build(options: ServeOptions) -> Application:
    """Ray Serve application builder: ServeOptions (or its JSON dict) -> the application."""
    if not isinstance(options, ServeOptions):
        options = ServeOptions.model_validate(options)
    return compose(options, [resolve(m) for m in options.models])


def compose(options: ServeOptions, sources: list[Source]) -> Application:
    names = [s.name for s in sources]
    bad = [n for n in names if not re.match(NAME_PATTERN, n)]
    if bad:
        raise SpecError(f"route names {bad} are not URL-safe ({NAME_PATTERN}): give each model a name=")
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise SpecError(f"two served models share the route name {dupes}: give each a distinct name=")
    rules = {s.name: ModelRules.build(s.name, s.spec, s.options.limits) for s in sources}
    models = {
        s.name: ray_serve.deployment(ModelServer).options(**model_deployment_options(s.name, s.options)).bind(s)
        for s in sources
    }
    front = ray_serve.deployment(Ingress).options(**ingress_deployment_options(options.ingress))
    return front.bind(rules, models, options.ingress)
