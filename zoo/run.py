"""A run: its spec resolved from a catalog entry with overrides, its folder, its paths made absolute
(the core half of ``zoo.train``; jobs/train.py trains it on Ray Train)."""

from __future__ import annotations

import os
import posixpath
import re
from dataclasses import dataclass, field
from typing import Any

import fsspec

from zoo import catalog
from zoo import checkpoint as ckpt
from zoo.errors import SpecError
from zoo.specs import RunSpec
from zoo.urls import with_protocol


@dataclass
class Run:
    spec: RunSpec
    dir: str
    checkpoint: str | None
    grid: str | None = None
    metrics: list[dict[str, Any]] = field(default_factory=list)
    bad_samples: dict[str, Any] | None = None
    rounds: list[Run] = field(default_factory=list)  # a chained distillation's earlier rounds, first to last

    def __repr__(self) -> str:
        return f"Run({self.spec.name!r}, dir={self.dir!r}, checkpoint={self.checkpoint!r}, grid={self.grid!r})"


def resolve_run(model: str | RunSpec, overrides: dict[str, Any]) -> RunSpec:
    if isinstance(model, RunSpec):
        return catalog.apply_overrides(model, overrides)
    return catalog.get(model, **overrides)


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
            url = with_protocol(base, p)
            if ckpt.latest(url) is not None:
                return url, url
        raise SpecError(f"resume=True: no run of {run.name} (spec {run.hash()}) with a checkpoint under {run.train.output!r}")
    if not existing:
        return base, None
    return f"{base}-{existing[-1][0] + 1}", None
