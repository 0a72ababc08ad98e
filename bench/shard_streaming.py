"""Shard streaming from an S3 API server: the fixed cost of an epoch and the steady per-row rate,
against a plain reader of the same shards and the rate a ddpm-digits step consumes.

    python bench/shard_streaming.py [--rows 20000] [--shard-size 1000] [--epochs 3] [--batch-size 128]

Starts moto's S3 server on 127.0.0.1 (nothing leaves the machine) and packs ``--rows`` digits
(the 1,437 shipped ones repeated) there twice: PNG (``zoo data pack``'s default) and raw uint8
pixels (``--pixels raw``). For each it measures, per epoch after a warm-up epoch,

- **Ray Data** (what training runs: ``jobs.shards.dataset`` -> ``streaming_split`` ->
  ``StreamData``'s shuffle buffer, read-ahead and uint8 -> [-1, 1]): the start cost (seconds
  from asking for an epoch to its first batch) and the steady rate (rows/s after it);
- **plain** (the limit of this machine: one process, no Ray): pyarrow reads the same shards
  through the same s3fs filesystem, ``decode_batch`` decodes them, the same uint8 -> [-1, 1];

then the images/s a ddpm-digits training step (forward, backward, AdamW) consumes at the same
batch size, and whether a trainer that needs its batches at a steady pace waits at epoch
boundaries (the digits set, read ahead by 1 batch vs ``PREFETCH_BATCHES``). All in one run, so
the ratios share the machine's load."""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import time

import numpy as np
import torch


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def digits_samples(rows: int):
    from jobs.pack import Sample
    from zoo.data import digits

    images, labels = digits.load("train")
    arr = ((images[:, 0] + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).numpy()
    n = len(arr)
    return [Sample(f"digits-{i:06d}", (lambda a=arr[i % n]: a), int(labels[i % n])) for i in range(rows)]


def plain_read(url: str, index, epochs: int, batch: int) -> list[tuple[float, int, float]]:
    """(start s, rows, s) per epoch of a one-process reader: pyarrow + decode_batch + to float."""
    import pyarrow.parquet as pq

    from jobs.shards import decode_batch
    from jobs.storage import join, pyarrow_fs

    fs, root = pyarrow_fs(url)
    column = "pixels" if "pixels" in index.columns else "image"
    out = []
    for _ in range(epochs):
        t0, first, rows, pending = time.perf_counter(), None, 0, []
        for info in index.shards:
            with fs.open_input_file(join(root, info.name)) as f:
                for rb in pq.ParquetFile(f).iter_batches(batch_size=1024, columns=["key", column, "label"]):
                    cols = {c: rb.column(c).to_numpy(zero_copy_only=False) for c in rb.schema.names}
                    pending.append(decode_batch(cols, index=index, on_bad="error", url=url)["image"])
                    have = np.concatenate(pending)
                    while len(have) >= batch:
                        torch.from_numpy(have[:batch]).float().div_(127.5).sub_(1.0)
                        have, rows = have[batch:], rows + batch
                        first = first or time.perf_counter() - t0
                    pending = [have]
        out.append((first, rows, time.perf_counter() - t0))
    return out


def ray_stream(url: str, index, epochs: int, batch: int, spec) -> tuple[list[dict], float]:
    """The training path at full speed: per epoch the reader's log, and the rows/s the
    consumer got over epochs 1.. (epoch boundaries included)."""
    from jobs import shards

    good, _ = shards.check_shards(url, index, "error")
    ds = shards.dataset(url, index, good, "error")
    stream = shards.StreamData(ds.streaming_split(1, equal=True)[0], spec, rank=0, world=1, state=None, start=0)
    per_epoch = index.rows // batch
    try:
        step = 0
        while step < per_epoch:  # epoch 0 warms up Ray's workers
            stream.batch(step)
            step += 1
        t0 = time.perf_counter()
        while step < per_epoch * (1 + epochs):
            stream.batch(step)
            step += 1
        rate = per_epoch * epochs * batch / (time.perf_counter() - t0)
    finally:
        stream.close()  # before Ray shuts down: no half-read epoch left behind
    return stream.epoch_log[1 : 1 + epochs], rate


def paced(url: str, index, spec, epochs: int, step_s: float, prefetch: int) -> tuple[float, float]:
    """A trainer that takes step_s per step: (s it waited at epoch boundaries, s it waited
    inside epochs), over epochs 1.. (epoch 0 warms up)."""
    from jobs import shards

    good, _ = shards.check_shards(url, index, "error")
    ds = shards.dataset(url, index, good, "error")
    stream = shards.StreamData(ds.streaming_split(1, equal=True)[0], spec, rank=0, world=1, state=None, start=0,
                               prefetch=prefetch)
    per_epoch = index.rows // spec.batch_size
    boundary = inside = 0.0
    try:
        for step in range(per_epoch * (1 + epochs)):
            t0 = time.perf_counter()
            stream.batch(step)
            waited = time.perf_counter() - t0
            if step >= per_epoch:
                if step % per_epoch == 0:
                    boundary += waited
                else:
                    inside += waited
            time.sleep(step_s)
    finally:
        stream.close()
    return boundary, inside


def train_rate(batch: int, steps: int) -> float:
    import zoo
    from components.random import RandomSource

    run = zoo.get("ddpm-digits", batch_size=batch)
    model, objective = zoo.build(run), run.train.objective.build()
    opt = torch.optim.AdamW(model.denoiser.parameters(), lr=1e-4)
    x0 = torch.rand(batch, 1, 16, 16) * 2 - 1
    for step in range(steps + 1):
        if step == 1:
            t1 = time.perf_counter()
        loss, _ = objective.loss(model.denoiser, {"x0": x0, "cond": None}, RandomSource.from_seed(step, batch), step)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return steps * batch / (time.perf_counter() - t1)


def summary(starts: list[float], rates: list[float]) -> tuple[float, float]:
    return statistics.median(starts), statistics.median(rates)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=20000)
    p.add_argument("--shard-size", type=int, default=1000)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--train-steps", type=int, default=10)
    p.add_argument("--step-s", type=float, default=0.1, help="the paced trainer's seconds per step")
    a = p.parse_args()

    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto's server logs every request

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1",
                      AWS_ENDPOINT_URL=endpoint, AWS_ENDPOINT_URL_S3=endpoint)
    import fsspec

    import zoo
    from jobs.pack import pack, write_samples
    from jobs.shards import PREFETCH_BATCHES
    from zoo import local_cluster

    results = {}
    try:
        fsspec.filesystem("s3").mkdir("bench")
        samples = digits_samples(a.rows)
        # zoo.train's embedded cluster (loopback only, workers at nice 0, no token notice), with
        # Ray Data's CPUs beside one train worker
        local_cluster.start(max(os.cpu_count() or 1, 3), resize=False, log_to_driver=False)
        for pixels in ("png", "raw"):
            url = f"s3://bench/digits-{pixels}"
            index = write_samples(samples, url, source="digits repeated", classes=[str(d) for d in range(10)],
                                  channels=1, shard_size=a.shard_size, pixels=pixels, progress=False)
            steps = index.rows // a.batch_size * (1 + a.epochs)  # the reader stops there
            spec = zoo.get("ddpm-digits", data=url, batch_size=a.batch_size, hflip=True, steps=steps).train
            plain = plain_read(url, index, a.epochs, a.batch_size)
            log, e2e = ray_stream(url, index, a.epochs, a.batch_size, spec)
            results[pixels] = {
                "plain": summary([s for s, _, _ in plain], [(r - a.batch_size) / (t - s) for s, r, t in plain]),
                "ray": summary([e["start_s"] for e in log],
                               [(e["rows"] - a.batch_size) / (e["read_s"] - e["start_s"]) for e in log]),
                "e2e": e2e, "shards": len(index.shards), "mb": sum(s.bytes for s in index.shards) / 2**20}
        small = "s3://bench/digits-small"
        index = pack("builtin:digits", small, shard_size=500, pixels="raw", progress=False)
        spec = zoo.get("ddpm-digits", data=small, batch_size=a.batch_size, steps=index.rows // a.batch_size * 4).train
        waits = {d: paced(small, index, spec, 3, a.step_s, d) for d in (1, PREFETCH_BATCHES)}
    finally:
        local_cluster.shutdown()
        server.stop()
    consume = train_rate(a.batch_size, a.train_steps)

    load = os.getloadavg()[0]
    print(f"{a.rows} digits (the 1,437 repeated) from S3 (moto on 127.0.0.1), batch {a.batch_size}, "
          f"{a.epochs} epochs after a warm-up one, {os.cpu_count()} CPUs, load average {load:.1f}")
    print(f"ddpm-digits training step consumes {consume:9.0f} img/s (torch threads {torch.get_num_threads()})")
    for pixels, r in results.items():
        (p_start, p_rate), (r_start, r_rate) = r["plain"], r["ray"]
        print(f"--pixels {pixels}: {r['shards']} shards, {r['mb']:.1f} MiB")
        print(f"  plain pyarrow + decode, 1 process   start {p_start:6.2f} s/epoch   steady {p_rate:9.0f} rows/s")
        print(f"  Ray Data -> StreamData (training)    start {r_start:6.2f} s/epoch   steady {r_rate:9.0f} rows/s"
              f"   epochs back to back {r['e2e']:9.0f} rows/s")
        print(f"  ratio steady Ray/plain {r_rate / p_rate:.2f}   steady Ray/consumed {r_rate / consume:.1f}"
              f"   back to back Ray/consumed {r['e2e'] / consume:.1f}")
    print(f"a trainer taking {a.step_s:g} s per step on the {index.rows} digits (raw), 3 epochs after a warm-up one:")
    for depth, (boundary, inside) in waits.items():
        print(f"  read ahead {depth:2d} batches: waited {boundary:6.2f} s at epoch boundaries, {inside:6.2f} s inside epochs")


if __name__ == "__main__":
    main()
