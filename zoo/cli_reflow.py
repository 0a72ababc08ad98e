"""`zoo reflow`: pairs from a trained flow, then k-rectified flow (or k-step distillation) on them."""

from __future__ import annotations

from typing import Optional

import typer


def reflow(
    source: str = typer.Argument(..., help="run folder or checkpoint of a trained flow (e.g. rf-digits)"),
    overrides: list[str] = typer.Argument(None, help="KEY=VALUE overrides of the target entry, e.g. steps=500"),
    into: Optional[str] = typer.Option(None, help="catalog entry to train (default: rf-X -> 2-rf-X)"),
    pairs: int = typer.Option(10_000, help="number of (noise, x0) pairs to generate"),
    solver: Optional[str] = typer.Option(None, help="ODE solver for the pairs, e.g. rk45 (default: the model's)"),
    grid: Optional[str] = typer.Option(None, help="time grid for the pairs (default: the model's)"),
    sample_steps: Optional[int] = typer.Option(None, help="solver steps for the pairs (default: the model's)"),
    distill: Optional[int] = typer.Option(None, help="train the k-step distillation instead (objective rf_distill)"),
    seed: int = typer.Option(0, help="seed of the pairs' noise (pair i uses seed (seed, i))"),
    output: Optional[str] = typer.Option(None, help="where runs and pairs are written"),
    progress: bool = typer.Option(True, help="show progress bars"),
) -> None:
    """Reflow (Liu et al. 2022): generate pairs with a trained flow, store them, train on them."""
    import zoo
    from zoo.cli_args import component_arg, fail as _fail, parse_overrides
    from jobs.reflow import reflow as run_reflow

    try:
        kw = parse_overrides(overrides or [])
        if output is not None:
            kw["output"] = output
        run = run_reflow(source, into=into, pairs=pairs, solver=component_arg(solver), grid=component_arg(grid),
                         sample_steps=sample_steps, pair_seed=seed, distill=distill, progress=progress, **kw)
    except (zoo.ZooError, ValueError) as e:
        _fail(e)
    typer.echo(f"pairs:      {run.spec.train.data}")
    typer.echo(f"run:        {run.dir}")
    typer.echo(f"checkpoint: {run.checkpoint}")
    if run.grid:
        typer.echo(f"samples:    {run.grid}")
