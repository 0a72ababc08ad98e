"""`zoo serve`: deploy models as a Ray Serve app, or export its config for Ray's own tooling.

    zoo serve runs/ddpm-digits-ab12                          # embedded Ray, http://127.0.0.1:8000
    zoo serve ddpm-digits --weights s3://b/ema.safetensors --replicas 1-4 --cpus 0.5
    zoo serve runs/a runs/b --address auto --host 0.0.0.0    # a running cluster
    zoo serve --config serve.yaml                            # ServeOptions in YAML/JSON
    zoo serve runs/a --export serve.yaml                     # `serve deploy serve.yaml`
    zoo serve runs/a --export rayservice.yaml --image registry/zoo:1   # kubectl apply -f
"""

from __future__ import annotations

import re
from typing import Optional

import typer
import yaml


def _fail(e: Exception) -> None:
    typer.secho(f"error: {e}", fg=typer.colors.RED, err=True)
    raise typer.Exit(2)


def parse_replicas(text: str) -> dict:
    """'2' -> fixed replicas; '1-4' -> autoscaling between 1 and 4."""
    m = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", text)
    if not m:
        raise typer.BadParameter(f"--replicas {text!r}: give N, or MIN-MAX to autoscale (e.g. 1-4)")
    lo, hi = int(m.group(1)), m.group(2)
    return {"replicas": max(lo, 1)} if hi is None else {"autoscaling": {"min_replicas": lo, "max_replicas": int(hi)}}


def serve_command(
    models: list[str] = typer.Argument(None, help="catalog names (with --weights) or checkpoint / run folder URLs"),
    weights: Optional[str] = typer.Option(None, help="weights URL for a catalog name (.safetensors or checkpoint)"),
    name: Optional[str] = typer.Option(None, help="route name of the model (one model)"),
    replicas: str = typer.Option("1", help="N replicas, or MIN-MAX to autoscale"),
    target_ongoing_requests: Optional[float] = typer.Option(None, help="autoscaling target per replica"),
    cpus: float = typer.Option(1.0, help="CPUs per replica (fractions allowed)"),
    gpus: float = typer.Option(0.0, help="GPUs per replica (fractions allowed)"),
    max_n: Optional[int] = typer.Option(None, help="images per request"),
    max_steps: Optional[int] = typer.Option(None, help="solver steps per request"),
    max_batch_images: Optional[int] = typer.Option(None, help="rows of one batched network call"),
    batching: bool = typer.Option(True, help="batch concurrent compatible requests"),
    overrides: list[str] = typer.Option(None, "--set", help="catalog override KEY=VALUE (catalog names only)"),
    config: Optional[str] = typer.Option(None, help="ServeOptions as YAML/JSON (instead of the flags above)"),
    host: Optional[str] = typer.Option(None, help="HTTP host of Serve's proxy [default: 127.0.0.1]"),
    port: Optional[int] = typer.Option(None, help="HTTP port of Serve's proxy [default: 8000]"),
    address: Optional[str] = typer.Option(None, help="a running Ray cluster ('auto', 'ray://host:10001'); default: embedded"),
    export: Optional[str] = typer.Option(None, help="write the Ray Serve config to this file and exit"),
    image: Optional[str] = typer.Option(None, help="with --export: write a KubeRay RayService using this image"),
) -> None:
    """Serve models over HTTP (Ray Serve), or export the app's config with --export."""
    from pydantic import ValidationError

    import zoo
    from serve.options import ServeOptions
    from serve.run import options_from
    from zoo.catalog import format_errors

    try:
        if config:
            if models:
                raise typer.BadParameter("give models either as arguments or in --config, not both")
            with open(config) as f:
                options = ServeOptions.model_validate(yaml.safe_load(f))
        else:
            if not models:
                raise typer.BadParameter("name a model: a catalog name (with --weights) or a checkpoint URL")
            from zoo.cli_args import parse_overrides

            per_model: dict = {**parse_replicas(replicas), "resources": {"num_cpus": cpus, "num_gpus": gpus}}
            if target_ongoing_requests is not None:
                if "autoscaling" not in per_model:
                    raise typer.BadParameter("--target-ongoing-requests needs --replicas MIN-MAX")
                per_model["autoscaling"]["target_ongoing_requests"] = target_ongoing_requests
            limits = {k: v for k, v in {"max_n": max_n, "max_steps": max_steps}.items() if v is not None}
            if limits:
                per_model["limits"] = limits
            per_model["batching"] = {"enabled": batching, **({"max_images": max_batch_images} if max_batch_images else {})}
            if overrides:
                per_model["overrides"] = parse_overrides(overrides)
            options, _ = options_from(tuple(models), name=name, weights=weights, **per_model)
        if export:
            _export(options, export, image, port or 8000)
            return
        served = zoo.serve(options, host=host, port=port, address=address)
    except ValidationError as e:
        _fail(zoo.SpecError(f"invalid serving options:\n{format_errors(e)}"))
    except (zoo.ZooError, ValueError, TypeError, OSError) as e:
        _fail(e)
    typer.echo(f"serving {', '.join(served.names)} at {served.url}/  (API docs: {served.url}/docs; Ctrl-C stops)")
    import time

    try:
        while True:
            time.sleep(1)
    except KeyboardInterrupt:
        served.shutdown()


def _export(options, path: str, image: str | None, port: int) -> None:
    from serve.config import rayservice, serve_config, to_yaml

    config, warnings = serve_config(options, port=port)
    if image:
        text = yaml.safe_dump(rayservice(config, image=image), sort_keys=False, width=100)
    else:
        text = to_yaml(config, warnings)
    with open(path, "w") as f:
        f.write(text)
    for w in warnings:
        typer.secho(f"warning: {w}", fg=typer.colors.YELLOW, err=True)
    typer.echo(path)
