"""Training throughput of zoo.train on one Ray Train worker vs a plain PyTorch loop on the same
model, batch, objective, optimizer, gradient clipping and EMA, with the same torch thread count.

    python bench/ray_train_overhead.py [--steps 60] [--batch-size 128] [--threads 1]

Prints images/s of both and their ratio, in steady state (zoo.train's own metrics after the
first logging window) and end to end (zoo.train's wall clock includes starting the cluster, the
worker and the process group, checkpoints and metrics files; the plain loop's includes building
the model), and where zoo.train's time goes: the embedded cluster, Ray Train's controller +
worker group + process group + the worker building the model (until the loop's first step
starts), the first step (first batch included), the other steps, the final checkpoint, and
the rest (the worker group's shutdown, metrics files, the loss plot). Timestamps come from a
callback in the worker (wall clock; the worker runs on this machine)."""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

import torch

import zoo
from components.random import RandomSource
from jobs import cluster
from jobs.callbacks import Callback
from jobs.ema import Ema
from zoo.data import digits


def plain_loop(run, steps: int) -> tuple[float, float]:
    """(steady images/s after a warm-up step, wall seconds) of a bare loop."""
    t0 = time.perf_counter()
    tr = run.train
    torch.manual_seed(0)
    model = zoo.build(run)
    objective = tr.objective.build()
    opt = torch.optim.AdamW(model.denoiser.parameters(), lr=tr.optimizer.lr)
    ema = Ema(model.denoiser, tr.ema.decay)
    images, _ = digits.load("train")
    g = torch.Generator().manual_seed(0)
    model.train()
    for step in range(steps + 1):
        if step == 1:
            t1 = time.perf_counter()
        x0 = images[torch.randint(len(images), (tr.batch_size,), generator=g)]
        rng = RandomSource.from_seed(step, tr.batch_size)
        loss, _ = objective.loss(model.denoiser, {"x0": x0, "cond": None}, rng, step)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.denoiser.parameters(), tr.optimizer.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        ema.update(model.denoiser, step)
    end = time.perf_counter()
    return steps * tr.batch_size / (end - t1), end - t0


class Stamps(Callback):
    """Wall-clock times of the loop's events in the worker, appended to a file."""

    def __init__(self, path: str, steps: int):
        self.path, self.steps = path, steps

    def _stamp(self, what: str) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps({what: time.time()}) + "\n")

    def on_train_start(self, step, rank):
        self._stamp("loop")

    def on_step_end(self, step, rank, metrics):
        if step in (1, self.steps):
            self._stamp(f"step_{step}")

    def on_checkpoint(self, step, rank, url):
        if step == self.steps:
            self._stamp("checkpoint")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--threads", type=int, default=1, help="torch threads = cpus_per_worker of the Ray worker")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    kw = dict(steps=a.steps, batch_size=a.batch_size, workers=1, cpus_per_worker=float(a.threads),
              checkpoint_every=a.steps, log_every=10, grid_samples=0)
    run = zoo.get("ddpm-digits", **kw)
    before, plain_wall = plain_loop(run, a.steps)
    with tempfile.TemporaryDirectory() as out:
        stamps = os.path.join(out, "stamps.jsonl")
        t0 = time.time()
        cluster.ensure(cpus=a.threads, progress=False)  # what zoo.train would start: the embedded cluster
        t_cluster = time.time()
        result = zoo.train("ddpm-digits", output=os.path.join(out, "runs"), progress=False,
                           callbacks=[Stamps(stamps, a.steps)], **kw)
        t_end = time.time()
        zoo_wall = t_end - t0
        with open(stamps) as f:
            at = {k: v for line in f for k, v in json.loads(line).items()}
    after, _ = plain_loop(run, a.steps)  # before and after: a shared machine's load drifts
    plain_ips = (before + after) / 2
    rows = [m for m in result.metrics if "img_per_s" in m][1:]  # after the first window (warm-up)
    zoo_ips = sum(m["img_per_s"] for m in rows) / len(rows)
    print(f"ddpm-digits, batch {a.batch_size}, {a.steps} steps, {a.threads} torch thread(s)")
    print(f"  plain PyTorch loop      {plain_ips:8.1f} img/s   {plain_wall:6.1f} s wall  (before {before:.1f}, after {after:.1f})")
    print(f"  zoo.train, 1 Ray worker {zoo_ips:8.1f} img/s   {zoo_wall:6.1f} s wall (cluster start, checkpoint, files)")
    phases = [("embedded cluster (ray.init)", t_cluster - t0),
              ("controller, worker group, process group, model", at["loop"] - t_cluster),
              ("first step (first batch included)", at["step_1"] - at["loop"]),
              (f"steps 2..{a.steps}", at[f"step_{a.steps}"] - at["step_1"]),
              ("final checkpoint", at["checkpoint"] - at[f"step_{a.steps}"]),
              ("shutdown, metrics, loss plot", t_end - at["checkpoint"])]
    for name, seconds in phases:
        print(f"    {name:50s} {seconds:6.1f} s")
    print(f"  ratio zoo/plain: steady {zoo_ips / plain_ips:.3f}, end to end {(a.steps * a.batch_size / zoo_wall) / (a.steps * a.batch_size / plain_wall):.3f}")


if __name__ == "__main__":
    main()
