"""`zoo distill`: a trained model in, a distilled run out (jobs/distill.py)."""

from __future__ import annotations

from typing import Optional

import typer


def distill(
    teacher: str = typer.Argument(..., help="run folder, checkpoint, or catalog name (with --weights) of the teacher"),
    overrides: list[str] = typer.Argument(None, help="KEY=VALUE overrides of the student, e.g. steps=500 objective.levels=40"),
    into: str = typer.Option(..., help="a distillation objective of the registry (cd, ict, pd, ...) or a catalog entry trained by one"),
    rounds: int = typer.Option(1, help="progressive distillation: chained rounds, each halving the steps"),
    weights: Optional[str] = typer.Option(None, help="weights URL for a catalog-name teacher (nothing is downloaded)"),
    data: Optional[str] = typer.Option(None, help="URL of training data (default: the student entry's)"),
    output: Optional[str] = typer.Option(None, help="where runs are written (path or fsspec URL)"),
    resume: bool = typer.Option(False, help="continue (or reuse) earlier runs of the same specs"),
    progress: bool = typer.Option(True, help="show progress bars"),
    address: Optional[str] = typer.Option(None, help="Ray cluster to train on; default: RAY_ADDRESS or an embedded one"),
) -> None:
    """Distil a trained model (CD, iCT, progressive distillation...) into a new run; prints each round's run."""
    import zoo
    from zoo.cli_args import fail as _fail, parse_overrides

    try:
        kw = parse_overrides(overrides or [])
        kw.update({k: v for k, v in (("data", data), ("output", output)) if v is not None})
        run = zoo.distill(teacher, into=into, rounds=rounds, weights=weights, resume=resume, progress=progress,
                          address=address, **kw)
    except (zoo.ZooError, ValueError) as e:
        _fail(e)
    for i, r in enumerate([*run.rounds, run]):
        prefix = f"round {i + 1}: " if run.rounds else ""
        typer.echo(f"{prefix}run:        {r.dir}")
    typer.echo(f"checkpoint: {run.checkpoint}")
    if run.grid:
        typer.echo(f"samples:    {run.grid}")
