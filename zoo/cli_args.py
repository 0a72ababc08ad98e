"""What every command line (zoo/cli.py, zoo/cli_jobs.py, zoo/cli_serve.py, zoo/cli_reflow.py, zoo/evaluation/cli.py)
shares: reading KEY=VALUE overrides and component options, and failing with a message."""

from __future__ import annotations

import typer
import yaml


def fail(e: Exception) -> None:
    typer.secho(f"error: {e}", fg=typer.colors.RED, err=True)
    raise typer.Exit(2)


def parse_overrides(pairs: list[str]) -> dict:
    """KEY=VALUE pairs; values are read as YAML (200 -> int, true -> bool, [1,2] -> list)."""
    out = {}
    for pair in pairs:
        if "=" not in pair:
            raise typer.BadParameter(f"override {pair!r} is not KEY=VALUE (e.g. steps=200, optimizer.lr=1e-4)")
        key, value = pair.split("=", 1)
        out[key.strip()] = yaml.safe_load(value) if value.strip() else None
    return out


def component_arg(value: str | None):
    """A solver/grid option: a kind name, or YAML for a full spec ('{kind: heun, s_churn: 40}')."""
    return yaml.safe_load(value) if value is not None and value.lstrip().startswith("{") else value
