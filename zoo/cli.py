"""The `zoo` command line, mirroring the Python API.

    zoo list [PATTERN]
    zoo describe NAME
    zoo train NAME [KEY=VALUE ...] [--data URL] [--output URL] [--resume [RUN]]
    zoo sample CHECKPOINT --n 64 --steps 50 --solver ddim --grid uniform --out grid.png
    zoo reflow RUN [KEY=VALUE ...] [--into NAME] [--pairs N] [--solver rk45] [--sample-steps S] [--distill K]
    zoo distill TEACHER [KEY=VALUE ...] --into cd|ict|pd [--rounds R] [--weights URL]   (zoo/cli_distill.py)
    zoo serve NAME_OR_CHECKPOINT... [--replicas N|MIN-MAX] [--export serve.yaml]   (zoo/cli_serve.py)
    zoo eval RUN --metric digits_fid --nfe 1,2,4,8 --solver ddim --solver ddpm   (zoo.evaluation.cli)
    zoo stats DATA --inception pt_inception.pth
    zoo edit RUN --task inpaint|colorize|superres --input IMAGES [--mask bottom|PNG] --out edit.png   (zoo/cli_edit.py)
    zoo data pack|encode ...      zoo submit NAME ... --address http://HOST:8265   (zoo/cli_jobs.py)
"""

from __future__ import annotations

from typing import Optional

import typer

from zoo.cli_args import component_arg, fail as _fail, parse_overrides

app = typer.Typer(add_completion=False, no_args_is_help=True, help="diffusion-zoo: train, sample and serve catalog models.")


@app.command("list")
def list_(pattern: str = typer.Argument("*", help="glob, e.g. 'ddpm-*'")) -> None:
    """List catalog entries."""
    import zoo

    for name in zoo.list(pattern):
        typer.echo(f"{name:24s} {zoo.get(name).description}")


@app.command()
def describe(name: str) -> None:
    """Print a catalog entry in full (JSON)."""
    import zoo

    try:
        typer.echo(zoo.describe(name))
    except zoo.ZooError as e:
        _fail(e)


@app.command()
def train(
    name: str,
    overrides: list[str] = typer.Argument(None, help="KEY=VALUE overrides, e.g. steps=200 optimizer.lr=1e-4"),
    data: Optional[str] = typer.Option(None, help="URL of training data (builtin:digits, s3://...)"),
    output: Optional[str] = typer.Option(None, help="where runs are written (path or fsspec URL)"),
    resume: Optional[str] = typer.Option(None, help="'latest' for the newest run of this spec, or a run URL"),
    progress: bool = typer.Option(True, help="show progress bars"),
    address: Optional[str] = typer.Option(None, help="Ray cluster to train on (HOST:6379, ray://HOST:10001); default: RAY_ADDRESS or an embedded one"),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="show Ray's own logs here instead of in <run>/ray.log"),
) -> None:
    """Train a catalog entry; prints the run folder, checkpoint, sample grid, loss plot and Ray's log."""
    import zoo

    try:
        kw = parse_overrides(overrides or [])
        if data is not None:
            kw["data"] = data
        if output is not None:
            kw["output"] = output
        res: bool | str = False if resume is None else (True if resume == "latest" else resume)
        run = zoo.train(name, resume=res, progress=progress, address=address, verbose=verbose, **kw)
    except zoo.ZooError as e:
        _fail(e)
    typer.echo(f"run:        {run.dir}")
    typer.echo(f"checkpoint: {run.checkpoint}")
    if run.grid:
        typer.echo(f"samples:    {run.grid}")
    if run.loss_plot:
        typer.echo(f"loss plot:  {run.loss_plot}")
    if run.ray_log:
        typer.echo(f"Ray's log:  {run.ray_log}")


@app.command()
def sample(
    checkpoint: str = typer.Argument(..., help="checkpoint or run folder, diffusers folder, or catalog name (any fsspec URL)"),
    n: int = typer.Option(64, help="number of images"),
    steps: Optional[int] = typer.Option(None, help="solver steps (default: the model's)"),
    solver: Optional[str] = typer.Option(None, help="solver kind (ddim, heun, dpmpp_2m, rk45, ...) or YAML '{kind: heun, s_churn: 40}'"),
    grid: Optional[str] = typer.Option(None, help="time grid kind (uniform, karras, log_snr, trailing, ...) or YAML"),
    seed: int = typer.Option(0),
    guidance: Optional[float] = typer.Option(None, help="classifier-free guidance w"),
    label: Optional[int] = typer.Option(None, help="class label for class-conditional models"),
    prompt: Optional[str] = typer.Option(None, help="text prompt for text-conditioned models"),
    weights: Optional[str] = typer.Option(None, help="weights URL for a catalog name (safetensors or diffusers folder)"),
    out: str = typer.Option("samples.png", help="PNG grid to write"),
    ema: bool = typer.Option(True, help="use the EMA weights"),
) -> None:
    """Sample a trained model into a PNG grid."""
    import zoo

    try:
        model = zoo.load(checkpoint, ema=ema, weights=weights)
        images = model.sample(n, steps=steps, solver=component_arg(solver), grid=component_arg(grid), seed=seed,
                              guidance=guidance, labels=label, prompt=prompt, progress=True)
    except (zoo.ZooError, ValueError) as e:
        _fail(e)
    typer.echo(zoo.save_grid(images, out))


# commands that live with their subsystem
from zoo.cli_jobs import data_app, submit, train_autoencoder  # noqa: E402  (zoo data pack|encode, zoo submit)
from zoo.cli_serve import serve_command  # noqa: E402
from zoo.evaluation import cli as _eval_cli  # noqa: E402  zoo eval, zoo stats

app.command("serve")(serve_command)
app.add_typer(data_app, name="data")
app.command()(submit)
app.command("train-autoencoder")(train_autoencoder)
_eval_cli.register(app)
from zoo.cli_reflow import reflow  # noqa: E402

app.command()(reflow)
from zoo.cli_edit import edit as _edit  # noqa: E402

app.command("edit")(_edit)
from zoo.cli_distill import distill  # noqa: E402

app.command()(distill)

if __name__ == "__main__":
    app()
