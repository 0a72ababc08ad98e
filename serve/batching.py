"""Dynamic batching of generate requests, independent of Ray (the Serve deployment feeds it the
lists that ``@serve.batch`` collects).

Requests that agree on everything the network call shares (steps, solver, guidance, and whether
they carry a label / prompt) form one group and run as ONE ``model.sample`` call; each request
keeps its own seed through a RandomSource with one generator per request, so its images are the
ones it would get alone. A group whose call fails is retried request by request, so one bad
request fails alone; a call that returns non-finite values is a failure too (never sent as an
image).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace

import numpy as np
import torch

from components.random import RandomSource
from zoo.model import Model


@dataclass(frozen=True)
class Job:
    """One validated request, defaults filled in (see serve/limits.py)."""

    n: int
    steps: int
    solver: str  # canonical JSON of the solver spec
    guidance: float
    seed: int
    label: int | None = None
    prompt: str | None = None
    first: int = 0  # a chunk of a larger request: its rows [first, first + n) of the request's
    whole: int | None = None  # ``whole`` rows (same seed: the chunk's images are those rows' images)

    def chunks(self, size: int) -> list[Job]:
        """The request as jobs of at most ``size`` images, in order; together they make exactly
        its images (each draws the whole request's noise stream and keeps its rows)."""
        if self.n <= size:
            return [self]
        return [replace(self, n=min(size, self.n - i), first=i, whole=self.n) for i in range(0, self.n, size)]

    def key(self) -> tuple:
        """Requests with equal keys can share a network call."""
        return (self.steps, self.solver, self.guidance, self.label is None, self.prompt is None)


@dataclass
class Outcome:
    """What a replica sends back for one job: images (n, C, H, W) float32 in [0, 1], or an error."""

    images: np.ndarray | None
    batch_requests: int
    batch_images: int
    elapsed_s: float
    error: str | None = None
    replica: str = ""
    status: int = 500  # of an error: 500 a failure on this request, 503 a replica that is not ready


def groups(jobs: list[Job], max_images: int) -> list[list[int]]:
    """Indices of jobs grouped by key (first-come order), each group at most max_images rows."""
    by_key: dict[tuple, list[list[int]]] = {}
    for i, job in enumerate(jobs):
        chunks = by_key.setdefault(job.key(), [[]])
        if chunks[-1] and sum(jobs[j].n for j in chunks[-1]) + job.n > max_images:
            chunks.append([])
        chunks[-1].append(i)
    return [chunk for chunks in by_key.values() for chunk in chunks]


def sample_group(model: Model, jobs: list[Job]) -> torch.Tensor:
    """One network call for compatible jobs, one generator per job."""
    first = jobs[0]
    rng = RandomSource.from_seeds([(j.seed, j.n) if j.whole is None else (j.seed, j.n, j.first, j.whole) for j in jobs],
                                  model.device)
    labels = [j.label for j in jobs for _ in range(j.n)] if first.label is not None else None
    prompt = [j.prompt for j in jobs for _ in range(j.n)] if first.prompt is not None else None
    total = sum(j.n for j in jobs)
    return model.sample(total, steps=first.steps, solver=json.loads(first.solver), guidance=first.guidance,
                        labels=labels, prompt=prompt, rng=rng)


def run_batch(model: Model, jobs: list[Job], max_images: int, started: list[float] | None = None) -> list[Outcome]:
    """Outcomes for jobs, in order. ``started`` holds each job's arrival time (for elapsed_s)."""
    started = started or [time.perf_counter()] * len(jobs)
    out: list[Outcome | None] = [None] * len(jobs)
    for idx in groups(jobs, max_images):
        group = [jobs[i] for i in idx]
        try:
            images = _finite(sample_group(model, group))
        except Exception as e:  # noqa: BLE001 - any failure inside the model is reported, never raised
            if len(idx) > 1:  # find the culprit: each request alone, same seeds, same images
                for i in idx:
                    out[i] = run_batch(model, [jobs[i]], max_images, [started[i]])[0]
                continue
            out[idx[0]] = Outcome(None, 1, group[0].n, time.perf_counter() - started[idx[0]], f"{type(e).__name__}: {e}")
            continue
        arr = images.detach().float().cpu().numpy()
        rows = np.cumsum([0] + [j.n for j in group])
        for k, i in enumerate(idx):
            out[i] = Outcome(arr[rows[k]:rows[k + 1]], len(idx), int(rows[-1]), time.perf_counter() - started[i])
    return out  # type: ignore[return-value]


def _finite(images: torch.Tensor) -> torch.Tensor:
    if not torch.isfinite(images).all():
        raise FloatingPointError("the model produced non-finite values (NaN/inf); no image is returned")
    return images
