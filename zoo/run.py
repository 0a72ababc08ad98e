"""``zoo.train``: resolve a catalog entry with overrides, train it on Ray Train, write a grid."""

from __future__ import annotations

import json
import os
import posixpath
import re
from dataclasses import dataclass, field
from typing import Any

import fsspec

from zoo import catalog, plots
from zoo import checkpoint as ckpt
from zoo.errors import DataError, SpecError
from zoo.images import save_grid
from zoo.loading import load
from zoo.specs import RunSpec


@dataclass
class Run:
    spec: RunSpec
    dir: str
    checkpoint: str | None
    grid: str | None = None
    metrics: list[dict[str, Any]] = field(default_factory=list)
    bad_samples: dict[str, Any] | None = None

    def __repr__(self) -> str:
        return f"Run({self.spec.name!r}, dir={self.dir!r}, checkpoint={self.checkpoint!r}, grid={self.grid!r})"


def resolve_run(model: str | RunSpec, overrides: dict[str, Any]) -> RunSpec:
    if isinstance(model, RunSpec):
        return catalog.apply_overrides(model, overrides)
    return catalog.get(model, **overrides)


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
    from jobs import data as data_sources
    from jobs import ray_train
    from jobs.context import MetricsLog

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


def local_absolute(url: str | None) -> str | None:
    """A relative local path made absolute against this process's working directory (Ray
    workers run in directories of their own); URLs and ``builtin:`` names as they are."""
    if url is None or "://" in url or url.startswith("builtin:") or os.path.isabs(url):
        return url
    return os.path.abspath(url)


def absolute_paths(run: RunSpec) -> RunSpec:
    """The run with its local data, output and weights paths made absolute."""
    train = run.train.model_copy(update={"data": local_absolute(run.train.data),
                                         "output": local_absolute(run.train.output)})
    model = run.model.model_copy(update={"weights": local_absolute(run.model.weights)})
    return run.model_copy(update={"train": train, "model": model})


def run_directory(run: RunSpec, resume: bool | str) -> tuple[str, str | None]:
    """(run dir, checkpoint source to resume from). Runs are named ``<name>-<spec hash>``; a
    second fresh run of the same spec gets ``-2``, ``-3``, ... so nothing is overwritten."""
    if isinstance(resume, str):
        if ckpt.latest(resume) is None:
            raise SpecError(f"resume={resume!r}: no complete checkpoint there to resume from")
        return resume.rstrip("/"), resume
    base = posixpath.join(run.train.output.rstrip("/"), f"{run.name}-{run.hash()}")
    fs, base_path = fsspec.core.url_to_fs(base)
    pattern = re.compile(re.escape(base_path.rsplit("/", 1)[-1]) + r"(?:-(\d+))?$")
    parent = posixpath.dirname(base_path)
    existing = []
    if fs.isdir(parent):
        for p in fs.ls(parent, detail=False):
            m = pattern.fullmatch(p.rstrip("/").rsplit("/", 1)[-1])
            if m:
                existing.append((int(m.group(1) or 1), p))
    existing.sort()
    if resume:
        for _, p in reversed(existing):
            url = _with_protocol(base, p)
            if ckpt.latest(url) is not None:
                return url, url
        raise SpecError(f"resume=True: no run of {run.name} (spec {run.hash()}) with a checkpoint under {run.train.output!r}")
    if not existing:
        return base, None
    return f"{base}-{existing[-1][0] + 1}", None


def _with_protocol(template: str, path: str) -> str:
    return template.split("://", 1)[0] + "://" + path if "://" in template else path
