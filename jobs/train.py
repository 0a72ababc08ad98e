"""``zoo.train``: resolve a catalog entry with overrides, train it on Ray Train, write a grid."""

from __future__ import annotations

import json
import posixpath
import sys
from typing import Any

import fsspec

from jobs import data as data_sources
from jobs import ray_train
from jobs.ray_log import url as ray_log_url
from jobs.autoencoder import with_fitted_autoencoder
from jobs.context import MetricsLog
from zoo import checkpoint as ckpt
from zoo import plots
from zoo.catalog import get as catalog_entry
from zoo.errors import CheckpointError, DataError, SpecError
from zoo.resolve import is_catalog_name
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
    verbose: bool = False,
    **overrides: Any,
) -> Run:
    """Train a catalog entry (or a RunSpec) with typed overrides on Ray Train, e.g.
    ``zoo.train("ddpm-digits", steps=200, batch_size=64)`` or
    ``zoo.train("ddpm-cifar", data="s3://bucket/cifar10/", workers=8, gpus_per_worker=1)``.

    Runs on the Ray cluster this process joined, else the one ``address=`` / ``RAY_ADDRESS``
    names, else an embedded local one. ``workers=0`` runs in this process (Ray Train's local
    mode). ``resume=True`` continues the newest run of the same spec from its newest complete
    checkpoint; ``resume="<run dir URL>"`` continues that run. ``callbacks`` run in every worker
    (jobs.callbacks.Callback). ``device`` applies to workers=0. ``progress`` draws one bar
    (step, loss, img/s, ETA; a single final line when stderr is not a terminal); Ray's own
    output goes to ``<run>/ray.log`` unless ``verbose``.
    """
    run = absolute_paths(resolve_run(model, overrides))
    resume = local_absolute(resume) if isinstance(resume, str) else resume
    _check_teacher(run)
    if run.train.data is None:
        needs = getattr(run.train.objective, "needs_data", None)  # e.g. reflow pairs
        raise DataError(
            f"{run.name} needs training data: "
            + (f"pass data= {needs}." if needs else "pass data='<URL of shards>' (e.g. s3://bucket/cifar10/). "
               "Only the small *-digits entries ship their data (data='builtin:digits').")
        )
    if run.train.lora is not None and not run.model.weights:
        raise SpecError(f"{run.name}: lora= trains adapters on a base model: pass weights='<URL of its weights>' "
                        "(a .safetensors file, a checkpoint or run folder, or a diffusers folder)")
    data_sources.kind(run.train.data)  # an unknown source fails here, before any cluster starts
    run = with_fitted_autoencoder(run, progress)  # a latent model's KL-VAE with a recipe and no weights: fitted first
    run_dir, resume_from = run_directory(run, resume)
    fs, path = fsspec.core.url_to_fs(run_dir)
    fs.makedirs(path, exist_ok=True)
    with fs.open(posixpath.join(path, "spec.json"), "w") as f:
        f.write(json.dumps(run.model_dump(mode="json"), indent=2))

    ray_train.fit(run, run_dir, resume_from, address=address, progress=progress, device=device, callbacks=callbacks,
                  verbose=verbose)
    result = Run(run, run_dir, ckpt.latest(run_dir), metrics=MetricsLog(run_dir).rows,
                 bad_samples=ray_train.bad_samples(run_dir))
    result.loss_plot = plots.loss_curve(run_dir)  # <run>/loss.png from metrics.jsonl
    result.ray_log = ray_log_url(run_dir) if not verbose else None
    if run.train.grid_samples and result.checkpoint:
        trained = load(result.checkpoint, device=device or "cpu")
        images = trained.sample(run.train.grid_samples, seed=run.train.seed,
                                progress=progress and sys.stderr.isatty())  # a bar in a log file repeats its line
        result.grid = save_grid(images, posixpath.join(run_dir, "samples.png"))
    return result


def _check_teacher(run: RunSpec) -> None:
    """A distillation run whose teacher is a paper-scale catalog entry without weights fails here,
    before any cluster starts, saying what to pass (and that data is missing too, if it is)."""
    obj = run.train.objective
    teacher = getattr(obj, "teacher", None)
    if not teacher or getattr(obj, "teacher_weights", None) or not is_catalog_name(teacher):
        return
    if catalog_entry(teacher).model.weights is not None:
        return
    also = (" It also needs data='<URL of latent shards>' (zoo data encode), e.g. data='s3://bucket/latents/'."
            if run.train.data is None else "")
    raise CheckpointError(
        f"{run.name} distills from the catalog entry {teacher!r}, which has no weights: pass "
        f"teacher_weights='<{teacher} weights: a diffusers folder or checkpoint, local or s3://>', e.g. "
        f"zoo.train({run.name!r}, teacher_weights='s3://bucket/{teacher}/', data='s3://bucket/latents/').{also}")
