"""``zoo.serve``: deploy catalog models, checkpoints or in-memory models as a Ray Serve app.

    served = zoo.serve("runs/ddpm-digits-ab12", autoscaling={"min_replicas": 1, "max_replicas": 4})
    served.client().generate(n=4, seed=0)          # or plain HTTP at served.url
    served.shutdown()

Ray: the cluster this process is connected to, else ``address=`` (``"auto"``, ``"ray://..."``),
else an embedded local cluster. HTTP: Serve's proxy on ``host:port`` (cluster-wide; a proxy
already running keeps its own host and port, and ``served.url`` says which).
"""

from __future__ import annotations

import os
import time
import warnings
from dataclasses import dataclass
from typing import Any

from serve.options import ModelOptions, ServeOptions
from zoo import local_cluster
from zoo.model import Model

# keyword arguments of zoo.serve that are ModelOptions fields, applied to every model given
_MODEL_FIELDS = set(ModelOptions.model_fields) - {"model", "name", "weights"}


@dataclass
class Served:
    """A running application: its URL, its options, and how to stop it."""

    url: str
    options: ServeOptions

    @property
    def names(self) -> list[str]:
        from ray import serve as ray_serve

        status = ray_serve.status().applications[self.options.app_name]
        return [d.removeprefix("model-") for d in status.deployments if d.startswith("model-")]

    def client(self, timeout: float = 120.0):
        from serve.client import Client

        return Client(self.url, timeout=timeout)

    def replicas(self, name: str) -> int:
        """Running replicas of one model's deployment."""
        from ray import serve as ray_serve

        from serve.app import model_deployment_name

        app = ray_serve.status().applications[self.options.app_name]
        return app.deployments[model_deployment_name(name)].replica_states.get("RUNNING", 0)

    def shutdown(self) -> None:
        from ray import serve as ray_serve

        ray_serve.delete(self.options.app_name)

    def __enter__(self) -> Served:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.shutdown()


def options_from(models: tuple[Any, ...], *, name: str | None = None, weights: str | None = None,
                 app_name: str = "zoo", route_prefix: str = "/", ingress: dict | None = None,
                 **per_model: Any) -> tuple[ServeOptions, dict[int, Model]]:
    """ServeOptions from zoo.serve's arguments; in-memory Models come back by position."""
    unknown = set(per_model) - _MODEL_FIELDS
    if unknown:
        raise TypeError(f"zoo.serve() got unknown options {sorted(unknown)}; per-model options are {sorted(_MODEL_FIELDS)}")
    if len(models) == 1 and isinstance(models[0], ServeOptions):
        given = sorted([k for k, v in {"name": name, "weights": weights, "ingress": ingress}.items() if v] + list(per_model))
        if given or (app_name, route_prefix) != ("zoo", "/"):
            raise TypeError(f"zoo.serve(ServeOptions) takes its settings from the options; got {given or 'app_name/route_prefix'} too")
        return models[0], {}
    if (name or weights) and len(models) != 1:
        raise TypeError("name= and weights= apply to one model; give several models as ModelOptions / dicts")
    entries, memory = [], {}
    for i, m in enumerate(models):
        if isinstance(m, Model):
            memory[i] = m
            m = {"model": f"memory:{m.name}", "name": name or _route_name(m.name)}
        elif isinstance(m, str):
            m = {"model": m, "name": name, "weights": weights}
        elif isinstance(m, ModelOptions):
            m = m.model_dump(exclude_unset=True)
        elif isinstance(m, dict) and isinstance(m.get("model"), Model):  # a Model with its own options
            memory[i] = m["model"]
            m = {**m, "model": f"memory:{m['model'].name}", "name": m.get("name") or _route_name(m["model"].name)}
        entries.append({**per_model, **{k: v for k, v in dict(m).items() if v is not None}})
    body: dict[str, Any] = {"models": entries, "app_name": app_name, "route_prefix": route_prefix}
    if ingress is not None:
        body["ingress"] = ingress
    return ServeOptions.model_validate(body), memory


def serve(*models: Any, host: str | None = None, port: int | None = None, address: str | None = None,
          blocking: bool = False, **kwargs: Any) -> Served:
    """Deploy models (catalog names with weights=, checkpoint/run URLs, Models, ModelOptions or
    dicts of its fields, whose ``model`` may be a Model, or one ServeOptions) as one Serve
    application; returns when every replica has warmed up.

    Per-model keywords (replicas=, autoscaling=, resources=, batching=, limits=, max_ongoing_requests=,
    warmup_steps=, device=, ema=, overrides=) apply to every model given; name= and weights= to one.
    ``host``/``port`` (default 127.0.0.1:8000) start Serve's HTTP proxy; a proxy already running
    on the cluster keeps its own (a warning says so when they differ).
    """
    import ray
    from ray import serve as ray_serve

    from serve.app import compose
    from serve.source import in_memory, resolve

    if not models:
        raise TypeError("zoo.serve() needs at least one model: a catalog name, a checkpoint URL or a Model")
    options, memory = options_from(models, **kwargs)
    sources = [in_memory(memory[i], m) if i in memory else resolve(m) for i, m in enumerate(options.models)]
    if not ray.is_initialized():
        if address:
            ray.init(address=address, configure_logging=False)
        else:
            # the embedded cluster, on loopback; Serve applications live in it, so a later zoo.train
            # in this process that needs more CPUs is refused instead of restarting it
            local_cluster.start(os.cpu_count() or 1, resize=False, log_to_driver=False)
    elif address:
        warnings.warn(f"this process is already connected to a Ray cluster; address={address!r} is ignored", stacklevel=2)
    running = _http_options()
    if running is None:
        ray_serve.start(http_options={"host": host or "127.0.0.1", "port": port or 8000})
    elif (host or running[0], port or running[1]) != running:
        warnings.warn(f"Serve already runs its HTTP proxy on {running[0]}:{running[1]}; host={host}, port={port} "
                      "are ignored (they are cluster-wide, set when Serve starts)", stacklevel=2)
    ray_serve.run(compose(options, sources), name=options.app_name, route_prefix=options.route_prefix)
    _raise_if_not_ready(options)
    host, port = _http_options() or (host or "127.0.0.1", port or 8000)
    served = Served(_url(options.route_prefix, host, port), options)
    if blocking:
        try:
            while True:
                time.sleep(1)
        except KeyboardInterrupt:
            served.shutdown()
    return served


def _raise_if_not_ready(options: ServeOptions) -> None:
    """Fail fast with the replica's reason (the file and why) when a model started but is not
    ready (a deterministic load error, a non-finite warm-up): the app is deleted."""
    from ray import serve as ray_serve

    from serve.app import model_deployment_name
    from zoo.errors import ZooError

    app = ray_serve.status().applications[options.app_name]
    names = [d.removeprefix("model-") for d in app.deployments if d.startswith("model-")]
    for name in names:
        handle = ray_serve.get_deployment_handle(model_deployment_name(name), options.app_name)
        state = handle.ready.remote().result(timeout_s=60)
        if not state.get("ready", True):
            ray_serve.delete(options.app_name)
            raise ZooError(f"serving model {name!r}: {state['error']}")


def _route_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "_.-" else "-" for c in name.lower()).strip("-_.") or "model"


def _http_options() -> tuple[str, int] | None:
    """(host, port) of the Serve proxy running on this cluster, or None if Serve is not running."""
    try:
        from ray.serve.context import _get_global_client

        client = _get_global_client(raise_if_no_controller_running=False)
    except Exception:  # noqa: BLE001 - no controller, or Ray internals changed: treat as not running
        return None
    return None if client is None else (client.http_config.host, client.http_config.port)


def _url(route_prefix: str, host: str, port: int) -> str:
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    return f"http://{shown}:{port}{route_prefix.rstrip('/')}"
