"""The model replica: loads the model its Source names (the spec that trained it), warms up, and
generates, batching concurrent compatible requests with ``@serve.batch``.

A failure inside the model comes back as an Outcome with an error (the ingress answers 5xx);
it never raises through the replica, so the replica keeps serving.

Readiness means ready: a replica whose load fails deterministically (a CheckpointError,
SpecError or DataError: the file and the reason) or whose warm-up sample is not finite starts
but is NOT ready: ``ready()`` says why (so /readyz answers 503 with the reason, and zoo.serve
raises it at once instead of Serve retrying the same failure), and every request gets a 503
with that reason. Other load errors (out of memory, a node lost) raise, and Serve retries them.

The network call runs synchronously on Serve's user-code event loop, as in Ray's batching
examples: Serve keeps its own control loop (request intake, metrics, its watchdog) in another
thread, and requests that arrive during a call join the next batch. Running the call in a
worker thread instead made it compete for the GIL with request intake (a small CPU model holds
the GIL most of the time), and batches stayed small: 3.4 vs 10 requests per call at 16 clients.
For the same reason the replica defines no ``check_health`` (it would run on the busy loop and
time out during a long call); Serve's watchdog detects a wedged loop.
"""

from __future__ import annotations

import math
import time
from typing import Any

import torch
from ray import serve as ray_serve

from serve.batching import Job, Outcome, run_batch
from serve.options import BatchingOptions
from serve.source import Source
from zoo.errors import CheckpointError, DataError, SpecError


def _images(items: list[tuple[Job, float]]) -> int:
    """Batch size as Serve counts it: rows of the network call, not requests."""
    return sum(job.n for job, _ in items)


class ModelServer:
    def __init__(self, source: Source):
        self.name = source.name
        opts = source.options
        torch.set_num_threads(max(1, math.ceil(opts.resources.num_cpus)))
        device = opts.device
        if device == "auto":
            device = "cuda" if opts.resources.num_gpus > 0 and torch.cuda.is_available() else "cpu"
        self.batching = opts.batching
        self.replica = _replica_id()
        self.not_ready: str | None = None
        self.load_s = self.warmup_s = 0.0
        t0 = time.perf_counter()
        try:
            self.model = source.load(device)
        except (CheckpointError, SpecError, DataError) as e:  # deterministic: a retry fails the same way
            self.model, self.not_ready = None, f"loading {opts.model!r} failed: {type(e).__name__}: {e}"
            return
        self.load_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        if opts.warmup_steps:  # first calls allocate and pick kernels; do it before taking traffic
            steps = min(opts.warmup_steps, source.spec.sampling.steps)
            labels = 0 if hasattr(source.spec.conditioner, "num_classes") else None
            out = self.model.sample(1, steps=steps, seed=0, labels=labels, return_latents=True)
            if not torch.isfinite(out).all():
                self.not_ready = (f"the warm-up sample ({steps} steps, seed 0) of {opts.model!r} is not finite "
                                  "(NaN/inf): the weights or the spec are broken")
        self.warmup_s = time.perf_counter() - t0

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        """Serve's user_config: the batching options, changeable without restarting replicas."""
        self.batching = BatchingOptions.model_validate(user_config)
        self._batched.set_max_batch_size(self.batching.max_images)
        self._batched.set_batch_wait_timeout_s(self.batching.wait_s)

    async def generate(self, job: Job) -> Outcome:
        started = time.perf_counter()
        if self.not_ready is not None:
            return Outcome(None, 0, 0, 0.0, self.not_ready, self.replica, status=503)
        if self.batching.enabled:
            return await self._batched((job, started))
        return (await self._run([job], [started]))[0]

    @ray_serve.batch(max_batch_size=64, batch_wait_timeout_s=0.01, batch_size_fn=_images)
    async def _batched(self, items: list[tuple[Job, float]]) -> list[Outcome]:
        return await self._run([job for job, _ in items], [t for _, t in items])

    async def _run(self, jobs: list[Job], started: list[float]) -> list[Outcome]:
        # Synchronous on purpose (see the module docstring): one network call at a time.
        outcomes = run_batch(self.model, jobs, self.batching.max_images, started)
        for o in outcomes:
            o.replica = self.replica
        return outcomes

    def ready(self) -> dict[str, Any]:
        if self.not_ready is not None:
            return {"ready": False, "model": self.name, "replica": self.replica, "error": self.not_ready}
        return {"ready": True, "model": self.name, "replica": self.replica, "device": str(self.model.device),
                "load_s": round(self.load_s, 3), "warmup_s": round(self.warmup_s, 3)}


def _replica_id() -> str:
    try:
        return ray_serve.get_replica_context().replica_id.unique_id
    except Exception:  # noqa: BLE001 - outside Serve (unit tests)
        return "local"
