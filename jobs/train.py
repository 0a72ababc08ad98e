"""``zoo.train``: resolve a catalog entry with overrides, train it on Ray Train, write a grid."""

from __future__ import annotations

import json
import posixpath
from typing import Any

import fsspec

from jobs import data as data_sources
from jobs import ray_train
from jobs.autoencoder import with_fitted_autoencoder
from jobs.context import MetricsLog
from zoo import checkpoint as ckpt
from zoo import plots
from zoo.errors import DataError
from zoo.images import save_grid
from zoo.loading import load
from zoo.run import Run, absolute_paths, local_absolute, resolve_run, run_directory
from zoo.specs import RunSpec


def train(
    model: str | RunSpec,
    *,
    resume: bool | str = False,
    progress: bool = True,
    device: str | None = None,
    address: str | None = None,
    callbacks: list | tuple = (),
    **overrides: Any,
) -> Run:
    """Train a catalog entry (or a RunSpec) with typed overrides on Ray Train, e.g.
    ``zoo.train("ddpm-digits", steps=200, batch_size=64)`` or
    ``zoo.train("ddpm-cifar", data="s3://bucket/cifar10/", workers=8, gpus_per_worker=1)``.

    Runs on the Ray cluster this process joined, else the one ``address=`` / ``RAY_ADDRESS``
    names, else an embedded local one. ``workers=0`` runs in this process (Ray Train's local
    mode). ``resume=True`` continues the newest run of the same spec from its newest complete
    checkpoint; ``resume="<run dir URL>"`` continues that run. ``callbacks`` run in every worker
    (jobs.callbacks.Callback). ``device`` applies to workers=0.
    """
    run = absolute_paths(resolve_run(model, overrides))
    resume = local_absolute(resume) if isinstance(resume, str) else resume
    if run.train.data is None:
        needs = getattr(run.train.objective, "needs_data", None)  # e.g. reflow pairs
        raise DataError(
            f"{run.name} needs training data: "
            + (f"pass data= {needs}." if needs else "pass data='<URL of shards>' (e.g. s3://bucket/cifar10/). "
               "Only the small *-digits entries ship their data (data='builtin:digits').")
        )
    data_sources.kind(run.train.data)  # an unknown source fails here, before any cluster starts
    run = with_fitted_autoencoder(run, progress)  # a latent model's KL-VAE with a recipe and no weights: fitted first
    run_dir, resume_from = run_directory(run, resume)
    fs, path = fsspec.core.url_to_fs(run_dir)
    fs.makedirs(path, exist_ok=True)
    with fs.open(posixpath.join(path, "spec.json"), "w") as f:
        f.write(json.dumps(run.model_dump(mode="json"), indent=2))

    ray_train.fit(run, run_dir, resume_from, address=address, progress=progress, device=device, callbacks=callbacks)
    result = Run(run, run_dir, ckpt.latest(run_dir), metrics=MetricsLog(run_dir).rows,
                 bad_samples=ray_train.bad_samples(run_dir))
    plots.loss_curve(run_dir)  # <run>/loss.png from metrics.jsonl
    if run.train.grid_samples and result.checkpoint:
        trained = load(result.checkpoint, device=device or "cpu")
        images = trained.sample(run.train.grid_samples, seed=run.train.seed, progress=progress)
        result.grid = save_grid(images, posixpath.join(run_dir, "samples.png"))
    return result
