"""Drawing the evaluation samples: one job per (model, solver, steps), each sample i drawn from
its own seed ``seed + i`` (EDM's convention), so the images do not depend on the batch size or
on how the seeds are split over workers, and every solver and NFE sees the same initial noise.
Class-conditional models are label-sampled with balanced labels ``i % num_classes``; text models
whose conditioner makes captions from labels (``captions: digits``) are prompted the same way,
sample i with the caption of class ``i % 10`` ("a handwritten digit seven"), so digits_accuracy
is the rate at which the classifier agrees with the prompt. Other text models sample with the
null (empty) prompt.

In-process by default; with ``workers > 1`` the seeds of each job are split into shards that
run as Ray tasks (the embedded cluster, zoo/local_cluster.py, is started when none is running,
and stopped after).
Samples come back as uint8 images, as the detectors take them.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from pydantic import BaseModel
from tqdm.auto import tqdm

from zoo import local_cluster
from zoo.metrics.detectors import to_uint8
from zoo.model import Model


@dataclass
class Job:
    model: int  # index into the evaluated models
    solver: BaseModel
    grid: BaseModel
    steps: int
    guidance: float | None
    seeds: list[int]
    labels: list[int] | None
    batch: int
    key: Any = None  # the caller's handle
    cost: int = 1  # planned network calls per sample, for the progress bar


@dataclass
class Drawn:
    images: torch.Tensor  # uint8 (n, C, H, W)
    nfe: int  # measured network calls per sample() call
    seconds: float
    key: Any = field(default=None)


def labels_for(model: Model, seeds: Sequence[int], first: int) -> list[int] | None:
    """Balanced classes: a class-conditional model's labels, or the classes a captioned text model's prompts name."""
    k = getattr(model.conditioner, "num_classes", None) or getattr(model.conditioner, "caption_classes", None)
    return None if k is None else [(first + i) % k for i in range(len(seeds))]


def condition(model: Model, labels: list[int] | None) -> dict[str, Any]:
    """model.sample's keyword for these classes: labels=, or prompt= naming them for a text model."""
    if labels is None:
        return {}
    if model.conditioner.spec.takes == "prompt":
        return {"prompt": model.conditioner.captions_for(labels)}
    return {"labels": labels}


def draw(model: Model, job: Job, on_batch=None) -> Drawn:
    """Sample a job's seeds in batches, counting the denoiser's forward calls."""
    calls = [0]
    handle = model.denoiser.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    out, nfes, t0 = [], set(), time.perf_counter()
    try:
        for i in range(0, len(job.seeds), job.batch):
            calls[0] = 0
            seeds = job.seeds[i : i + job.batch]
            labels = job.labels[i : i + job.batch] if job.labels is not None else None
            x = model.sample(len(seeds), steps=job.steps, solver=job.solver, grid=job.grid,
                             guidance=job.guidance, seed=seeds, **condition(model, labels))
            out.append(to_uint8(x))
            nfes.add(calls[0])
            if on_batch is not None:
                on_batch(len(seeds) * job.cost)
    finally:
        handle.remove()
    if len(nfes) != 1:
        raise RuntimeError(f"the number of network calls varied between batches: {sorted(nfes)}")
    return Drawn(torch.cat(out), nfes.pop(), time.perf_counter() - t0, job.key)


def run_jobs(models: list[Model], jobs: list[Job], workers: int = 1, progress: bool = True) -> Iterator[Drawn]:
    """Yield each job's samples (in job order), in-process or over ``workers`` Ray tasks per job."""
    total = sum(len(j.seeds) * j.cost for j in jobs)  # in sample-forwards: the work, whatever the NFE
    bar = tqdm(total=total, desc="eval sampling", unit="fwd", unit_scale=True, disable=not progress, mininterval=1.0)
    try:
        if workers <= 1:
            for job in jobs:
                bar.set_postfix_str(f"{models[job.model].name} {job.solver.kind} steps={job.steps}")
                yield draw(models[job.model], job, bar.update)
        else:
            yield from _run_ray(models, jobs, workers, bar)
    finally:
        bar.close()


def _run_ray(models: list[Model], jobs: list[Job], workers: int, bar) -> Iterator[Drawn]:
    import ray

    started = not ray.is_initialized()
    if started:
        local_cluster.start(workers, resize=False, log_to_driver=False)  # on loopback, ended below
    try:
        gpu = 1 if next(models[0].parameters()).is_cuda else 0
        remote = ray.remote(num_cpus=1, num_gpus=gpu)(_draw_task)
        refs = [ray.put(m) for m in models]
        pending: dict[Any, tuple[int, int]] = {}
        shards: list[list[Drawn | None]] = []
        for j, job in enumerate(jobs):
            size = -(-len(job.seeds) // workers)
            parts = [(job.seeds[i : i + size], None if job.labels is None else job.labels[i : i + size])
                     for i in range(0, len(job.seeds), size)]
            shards.append([None] * len(parts))
            for p, (seeds, labels) in enumerate(parts):
                sub = Job(job.model, job.solver, job.grid, job.steps, job.guidance, seeds, labels, job.batch, cost=job.cost)
                pending[remote.remote(refs[job.model], sub)] = (j, p)
        emitted = 0
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            j, p = pending.pop(done[0])
            shards[j][p] = ray.get(done[0])
            bar.update(len(shards[j][p].images) * jobs[j].cost)
            while emitted < len(jobs) and all(s is not None for s in shards[emitted]):
                parts = shards[emitted]
                nfes = {d.nfe for d in parts}
                if len(nfes) != 1:
                    raise RuntimeError(f"workers measured different NFE for one job: {sorted(nfes)}")
                yield Drawn(torch.cat([d.images for d in parts]), nfes.pop(), sum(d.seconds for d in parts), jobs[emitted].key)
                shards[emitted] = []
                emitted += 1
    finally:
        if started:
            local_cluster.shutdown()


def _draw_task(model: Model, job: Job) -> Drawn:
    torch.set_num_threads(1)
    return draw(model, job)
