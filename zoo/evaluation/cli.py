"""``zoo eval`` and ``zoo stats``, registered on the main app by ``register(app)``.

    zoo eval runs/ddpm-digits-<hash> --metric digits_fid --nfe 1,2,4,8,16 --solver ddim --solver ddpm --n 1000
    zoo eval edm-cifar --weights s3://.../ema.safetensors --metric fid --inception pt_inception.pth --n 50000
    zoo stats s3://bucket/cifar10/ --inception pt_inception.pth     # writes s3://bucket/cifar10/stats.inception.npz
"""

from __future__ import annotations

from typing import Optional

import typer

from zoo.cli_args import fail as _fail


def _ints(text: str) -> list[int]:
    try:
        return [int(x) for x in text.replace(" ", "").split(",") if x]
    except ValueError:
        raise typer.BadParameter(f"--nfe takes comma-separated integers, e.g. 1,2,4,8; got {text!r}") from None


def eval_(
    models: list[str] = typer.Argument(..., help="run / checkpoint URLs or catalog names (with --weights)"),
    metric: list[str] = typer.Option(["fid"], help="fid, is, precision, recall, digits_fid, digits_is, digits_accuracy, ..."),
    nfe: str = typer.Option("1,2,4,8,16,32", help="NFE budgets, comma-separated"),
    solver: list[str] = typer.Option(None, help="solver kinds (repeat); 'all' for every kind; default: each model's own"),
    n: int = typer.Option(1000, help="samples per cell (the literature uses 50000)"),
    seed: int = typer.Option(0, help="first seed; sample i uses seed + i"),
    guidance: Optional[float] = typer.Option(None, help="classifier-free guidance w (default: the model's)"),
    ref: Optional[str] = typer.Option(None, help="reference data URL or statistics .npz (default: the model's training data)"),
    inception: Optional[str] = typer.Option(None, help="FID Inception-v3 weights (.pth / .safetensors), or $ZOO_INCEPTION"),
    weights: Optional[str] = typer.Option(None, help="weights URL for a catalog name"),
    workers: int = typer.Option(1, help="Ray workers sampling in parallel"),
    batch_size: int = typer.Option(250, help="samples per network batch"),
    out: Optional[str] = typer.Option(None, help="folder for eval.csv/json/txt and plots (default: <run>/eval)"),
    progress: bool = typer.Option(True, help="show progress bars"),
) -> None:
    """Evaluate models at several NFE with several solvers: prints the method x NFE tables."""
    import zoo

    try:
        loaded: list = [zoo.load(m, weights=weights) if weights else m for m in models]
        solvers = None if not solver else ("all" if solver == ["all"] else solver)
        ev = zoo.evaluate(loaded if len(loaded) > 1 else loaded[0], metric=metric, nfe=_ints(nfe), solvers=solvers, n=n,
                          seed=seed, guidance=guidance, ref=ref, inception=inception, workers=workers,
                          batch_size=batch_size, out=out, progress=progress)
    except (zoo.ZooError, ValueError) as e:
        _fail(e)
    typer.echo(str(ev))
    for what, url in ev.files.items():
        typer.echo(f"{what + ':':24s} {url}")


def stats(
    data: str = typer.Argument(..., help="builtin:digits, a .safetensors file of columns, or a folder of images"),
    detector: str = typer.Option("inception", help="inception or digits"),
    inception: Optional[str] = typer.Option(None, help="FID Inception-v3 weights (.pth / .safetensors), or $ZOO_INCEPTION"),
    features: bool = typer.Option(False, help="also store the features (precision/recall need them)"),
    out: Optional[str] = typer.Option(None, help="where to write the .npz (default: next to the data)"),
) -> None:
    """Compute reference statistics (mu, sigma) of a dataset for FID and store them next to it."""
    from zoo.errors import ZooError
    from zoo.metrics import detectors, reference

    try:
        det = detectors.get(detector, inception=inception)
        st = reference.compute(data, det, keep_features=features)
        url = st.save(out or reference.stats_url(data, det.id if data.startswith("builtin:") else det.name))
    except (ZooError, ValueError) as e:
        _fail(e)
    typer.echo(f"{url}: {st.n} images, {len(st.mu)}-d {det.id} features")


def register(app: typer.Typer) -> None:
    app.command("eval")(eval_)
    app.command("stats")(stats)
