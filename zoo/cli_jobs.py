"""CLI commands of the jobs package, registered in zoo/cli.py:

    zoo data pack SRC DEST [--shard-size 1000|64MB] [--size 32] [--channels 3] [--split train] [--pixels raw]
    zoo data encode SRC DEST --model NAME|CHECKPOINT [--weights URL]
    zoo submit NAME [KEY=VALUE ...] --address http://HOST:8265 [--working-dir DIR] [--env K=V] [--no-follow]
"""

from __future__ import annotations

from typing import Optional

import typer

from zoo.cli_args import fail as _fail

data_app = typer.Typer(no_args_is_help=True, help="Pack and encode training shards (Parquet, any fsspec URL).")


@data_app.command("pack")
def pack(
    src: str = typer.Argument(..., help="builtin:digits, a CIFAR-10 folder, or a folder of images (class subfolders = labels)"),
    dest: str = typer.Argument(..., help="folder URL for the shards (path, s3://...)"),
    shard_size: str = typer.Option("1000", help="samples per shard (1000) or bytes per shard (64MB)"),
    size: Optional[int] = typer.Option(None, help="center-crop and resize to SIZE x SIZE"),
    channels: Optional[int] = typer.Option(None, help="1 (grayscale) or 3 (RGB); default: the source's"),
    split: str = typer.Option("train", help="CIFAR-10 / digits split: train or test"),
    seed: int = typer.Option(0, help="seed of the pack-time shuffle"),
    pixels: str = typer.Option("png", help="png (compressed, decoded on every read) or raw (uint8 pixels, no decode)"),
    progress: bool = typer.Option(True),
) -> None:
    """Write image shards (Parquet + index.json) from SRC to DEST."""
    from jobs.pack import pack as run_pack
    from zoo.errors import ZooError

    try:
        index = run_pack(src, dest, shard_size=int(shard_size) if shard_size.isdigit() else shard_size, size=size,
                         channels=channels, split=split, seed=seed, pixels=pixels, progress=progress)
    except ZooError as e:
        _fail(e)
    typer.echo(f"{dest}: {index.rows} samples in {len(index.shards)} shards, {index.channels}x{index.image_size}x"
               f"{index.image_size}, columns {', '.join(index.columns)}")


@data_app.command("encode")
def encode(
    src: str = typer.Argument(..., help="image shards (zoo data pack)"),
    dest: str = typer.Argument(..., help="folder URL for the latent shards"),
    model: str = typer.Option(..., help="catalog name or checkpoint whose autoencoder encodes"),
    weights: Optional[str] = typer.Option(None, help="weights URL for a catalog name"),
    batch_size: int = typer.Option(64),
    dtype: str = typer.Option("float16", help="float16 or float32"),
    device: str = typer.Option("cpu"),
    progress: bool = typer.Option(True),
) -> None:
    """Precompute latents: write SRC's rows with a latent column in place of the image."""
    import zoo
    from jobs.encode import encode as run_encode
    from zoo.resolve import is_catalog_name

    try:
        m = zoo.load(model, weights=weights) if weights or not is_catalog_name(model) else zoo.build(model)
        index = run_encode(src, dest, m, batch_size=batch_size, dtype=dtype, device=device, progress=progress)
    except zoo.ZooError as e:
        _fail(e)
    typer.echo(f"{dest}: {index.rows} latents of shape {index.latent_shape} ({index.latent_dtype})")


def submit(
    name: str,
    overrides: list[str] = typer.Argument(None, help="KEY=VALUE overrides, e.g. steps=200 workers=4"),
    address: str = typer.Option(..., help="the cluster's job submission address, http://HOST:8265"),
    resume: Optional[str] = typer.Option(None, help="'latest' or a run URL"),
    working_dir: Optional[str] = typer.Option(None, help="a folder of your files to add to the job's working dir"),
    env: list[str] = typer.Option(None, help="KEY=VALUE environment variables for the job (repeatable)"),
    follow: bool = typer.Option(True, help="stream the job's logs and exit with its status"),
) -> None:
    """Submit a training run as a Ray job; prints the job id, follows its logs, exits with its status."""
    import zoo
    from jobs.submit import JobFailedError
    from jobs.submit import submit as run_submit
    from zoo.cli_args import parse_overrides

    try:
        kw = parse_overrides(overrides or [])
        env_vars = dict(pair.split("=", 1) for pair in env or [])
        res: bool | str = False if resume is None else (True if resume == "latest" else resume)
        job = run_submit(name, address=address, resume=res, working_dir=working_dir, env=env_vars, follow=follow, **kw)
    except JobFailedError as e:
        typer.secho(f"error: {e}", fg=typer.colors.RED, err=True)
        raise typer.Exit(1)
    except zoo.ZooError as e:
        _fail(e)
    if follow:
        typer.echo(f"job {job.job_id}: {job.status}")


def train_autoencoder(
    name: str,
    overrides: list[str] = typer.Argument(None, help="KEY=VALUE overrides, e.g. autoencoder.train.steps=800"),
    output: Optional[str] = typer.Option(None, help="where the VAE folder goes (default: the entry's output)"),
    progress: bool = typer.Option(True),
) -> None:
    """Fit a latent entry's KL-VAE by its recipe (autoencoder.train); prints the diffusers folder to pass as
    autoencoder.weights (zoo train does this itself when autoencoder.weights is null)."""
    import zoo
    from jobs.autoencoder import train_autoencoder as run_fit
    from zoo.cli_args import parse_overrides

    try:
        url = run_fit(name, output=output, progress=progress, **parse_overrides(overrides or []))
    except zoo.ZooError as e:
        _fail(e)
    typer.echo(url)
