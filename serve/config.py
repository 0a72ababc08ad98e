"""Export an application as a Ray Serve config (what ``serve build`` writes) and as a KubeRay
RayService manifest, so the same app deploys with Ray's own tooling:

    zoo serve runs/ddpm-digits-ab12 --replicas 1-4 --export serve.yaml
    serve deploy serve.yaml                       # a running cluster (Ray's CLI)
    zoo serve ... --export rayservice.yaml --image registry/zoo:1.0   # kubectl apply -f

The config's application imports ``serve.app:build`` with the ServeOptions as ``args``; its
``deployments`` section repeats the replica/autoscaling/resource settings so operators can
override them there, as Ray's config files allow. Checkpoints are pinned to the newest complete
one when exporting, so the file names exactly the weights that will be served.
"""

from __future__ import annotations

from typing import Any

import ray
import yaml

from serve.app import ingress_deployment_options, model_deployment_options
from serve.options import ServeOptions
from serve.source import resolve
from zoo.resolve import is_catalog_name

IMPORT_PATH = "serve.app:build"


def serve_config(options: ServeOptions, *, host: str = "0.0.0.0", port: int = 8000,
                 runtime_env: dict | None = None) -> tuple[dict[str, Any], list[str]]:
    """(a ServeDeploySchema-shaped dict, warnings about URLs other nodes cannot read)."""
    sources = [resolve(m) for m in options.models]
    pinned = options.model_copy(update={"models": [s.options.model_copy(update={"name": s.name}) for s in sources]})
    warnings = []
    for s in sources:
        for url in (s.options.model, s.options.weights):
            if url and not is_catalog_name(url) and "://" not in url:
                warnings.append(f"{s.name}: {url} is a local path; every node of the cluster must have it (use s3://...)")
    app = {
        "name": options.app_name,
        "route_prefix": options.route_prefix,
        "import_path": IMPORT_PATH,
        "runtime_env": runtime_env or {},
        "args": pinned.model_dump(mode="json"),
        "deployments": [
            ingress_deployment_options(options.ingress),
            *(model_deployment_options(s.name, s.options) for s in sources),
        ],
    }
    config = {"proxy_location": "EveryNode", "http_options": {"host": host, "port": port}, "applications": [app]}
    return config, warnings


def to_yaml(config: dict[str, Any], warnings: list[str] = ()) -> str:
    head = [f"# Ray Serve config written by `zoo serve --export` (Ray {ray.__version__}).",
            "# Deploy with `serve deploy FILE` or as a KubeRay RayService's serveConfigV2."]
    head += [f"# WARNING: {w}" for w in warnings]
    return "\n".join(head) + "\n" + yaml.safe_dump(config, sort_keys=False, width=100)


def rayservice(config: dict[str, Any], *, image: str, name: str = "diffusion-zoo",
               max_workers: int = 4, worker_cpus: int = 2, worker_gpus: int = 0) -> dict[str, Any]:
    """A KubeRay RayService (ray.io/v1) whose serveConfigV2 is ``config``. ``image`` must have
    diffusion-zoo installed (Ray's images do not)."""
    autoscale = any(m.get("autoscaling") for a in config["applications"] for m in a["args"]["models"])
    limits = {"cpu": str(worker_cpus), **({"nvidia.com/gpu": str(worker_gpus)} if worker_gpus else {})}
    serve_v2 = {k: v for k, v in config.items() if k != "http_options"}  # KubeRay owns the HTTP port
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayService",
        "metadata": {"name": name},
        "spec": {
            "serveConfigV2": yaml.safe_dump(serve_v2, sort_keys=False, width=100),
            "rayClusterConfig": {
                "rayVersion": ray.__version__,
                "enableInTreeAutoscaling": autoscale,
                "headGroupSpec": {
                    "rayStartParams": {"dashboard-host": "0.0.0.0", "num-cpus": "0"},
                    "template": {"spec": {"containers": [{
                        "name": "ray-head", "image": image,
                        "resources": {"requests": {"cpu": "1", "memory": "4Gi"}, "limits": {"cpu": "1", "memory": "4Gi"}},
                        "ports": [{"containerPort": 6379, "name": "gcs-server"}, {"containerPort": 8265, "name": "dashboard"},
                                  {"containerPort": 10001, "name": "client"}, {"containerPort": 8000, "name": "serve"}],
                    }]}},
                },
                "workerGroupSpecs": [{
                    "groupName": "models",
                    "replicas": 1, "minReplicas": 1, "maxReplicas": max_workers,
                    "rayStartParams": {},
                    "template": {"spec": {"containers": [{
                        "name": "ray-worker", "image": image,
                        "resources": {"requests": limits, "limits": limits},
                    }]}},
                }],
            },
        },
    }
