"""Shard streaming rate from an S3 API server vs the rate training consumes images.

    python bench/shard_streaming.py [--epochs 3] [--shard-size 256] [--batch-size 128]

Starts moto's S3 server on 127.0.0.1 (nothing leaves the machine), packs the shipped digits into
Parquet shards there, and streams them through the same Ray Data pipeline training uses
(read_parquet with s3fs -> PNG decode -> a worker's shuffle buffer and batches, the uint8 ->
[-1, 1] conversion included). The consumption rate is that of ddpm-digits training steps (forward,
backward, AdamW) at the same batch size in this process. A ratio above 1 means the data keeps
the trainer busy."""

from __future__ import annotations

import argparse
import os
import socket
import time

import torch


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--shard-size", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--train-steps", type=int, default=10)
    a = p.parse_args()

    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1",
                      AWS_ENDPOINT_URL=endpoint, AWS_ENDPOINT_URL_S3=endpoint)
    import fsspec
    import ray

    import zoo
    from jobs import shards
    from jobs.pack import pack

    try:
        fsspec.filesystem("s3").mkdir("bench")
        url = "s3://bench/digits"
        index = pack("builtin:digits", url, shard_size=a.shard_size, progress=False)
        ray.init(num_cpus=max(os.cpu_count() or 1, 3), include_dashboard=False, configure_logging=False,
                 log_to_driver=False)
        good, _ = shards.check_shards(url, index, "error")
        ds = shards.dataset(url, index, good, "error")
        spec = zoo.get("ddpm-digits", data=url, batch_size=a.batch_size, hflip=True).train
        stream = shards.StreamData(ds, spec, rank=0, world=1, state=None, start=0)
        step = 0
        while stream.epoch < 1:  # epoch 0 warms up Ray Data's workers
            stream.batch(step)
            step += 1
        rows, t0 = spec.batch_size, time.perf_counter()
        while stream.epoch < 1 + a.epochs:
            rows += len(stream.batch(step)["image"])
            step += 1
        stream_rate = rows / (time.perf_counter() - t0)
    finally:
        ray.shutdown()
        server.stop()

    run = zoo.get("ddpm-digits", batch_size=a.batch_size)
    model, objective = zoo.build(run), run.train.objective.build()
    opt = torch.optim.AdamW(model.denoiser.parameters(), lr=1e-4)
    x0 = torch.rand(a.batch_size, 1, 16, 16) * 2 - 1
    from components.random import RandomSource

    for step in range(a.train_steps + 1):
        if step == 1:
            t1 = time.perf_counter()
        loss, _ = objective.loss(model.denoiser, {"x0": x0, "cond": None}, RandomSource.from_seed(step, a.batch_size), step)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    train_rate = a.train_steps * a.batch_size / (time.perf_counter() - t1)
    print(f"digits from S3 (moto on 127.0.0.1): {index.rows} samples in {len(index.shards)} Parquet shards, "
          f"{a.epochs} epochs, batch {a.batch_size}, torch threads {torch.get_num_threads()}")
    print(f"  streaming (Ray Data, s3fs, decode, shuffle) {stream_rate:9.1f} img/s")
    print(f"  training consumes (ddpm-digits step)        {train_rate:9.1f} img/s")
    print(f"  ratio stream/consume: {stream_rate / train_rate:.2f}")


if __name__ == "__main__":
    main()
