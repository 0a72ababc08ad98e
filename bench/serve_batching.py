"""Serving benchmarks, printed as ratios measured in one run (make bench):

1. throughput (images/s) of one replica at 16 concurrent HTTP clients, with dynamic batching
   vs without (each request its own network call);
2. p50/p99 latency of one request through the endpoint (proxy + ingress + replica + encoding)
   vs ``model.sample`` of the same work in process, on the same thread count.

The model is a catalog entry at catalog size with untrained weights (speed does not depend on
what the weights learned): ddpm-digits (1.1M-parameter UNet, 50 DDIM steps) by default, or
``--model lcm-tiny``, the latent consistency model (KL-VAE + CLIP text + SD UNet with a
w-embedding) at its own 4 lcm steps, each client prompting a caption of the digits. Everything
runs on 127.0.0.1 in an embedded Ray.

    python bench/serve_batching.py [--model lcm-tiny] [--seconds 20] [--steps 10] [--clients 16]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

import zoo  # noqa: E402


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def conditioning(model, k: int) -> dict:
    """What client k sends besides n, steps and seed: a caption and the model's w for a text model."""
    if model.spec.conditioner.takes != "prompt":
        return {}
    return {"prompt": model.conditioner.captions_for([k % 10])[0], "guidance": model.spec.sampling.guidance}


def throughput(served, name: str, model, clients: int, seconds: float, steps: int) -> tuple[float, float]:
    """(images/s, mean requests per network call) with ``clients`` threads for ``seconds``."""
    c = served.client(timeout=300)
    for i in range(3):  # warm the path
        c.generate(name, n=1, steps=steps, seed=i, **conditioning(model, i))
    counts, batches, errors = [], [], []
    deadline = time.monotonic() + seconds

    def loop(k: int) -> None:
        n = 0
        for i in range(100_000):
            if time.monotonic() > deadline:
                break
            try:
                g = c.generate(name, n=1, steps=steps, seed=k * 100_000 + i, **conditioning(model, k))
                n += 1
                batches.append(g.batch_requests)
            except Exception as e:  # noqa: BLE001
                errors.append(repr(e))
        counts.append(n)

    t0 = time.monotonic()
    threads = [threading.Thread(target=loop, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - t0
    if errors:
        raise RuntimeError(f"{len(errors)} failed requests, e.g. {errors[0]}")
    return sum(counts) / elapsed, float(np.mean(batches))


def latencies(fn, repeats: int) -> list[float]:
    out = []
    for i in range(repeats):
        t0 = time.perf_counter()
        fn(i)
        out.append(time.perf_counter() - t0)
    return out


def pct(xs: list[float], q: float) -> float:
    return float(np.percentile(xs, q))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=20.0, help="load time per mode, split into rounds")
    ap.add_argument("--rounds", type=int, default=2, help="batched/unbatched alternate this many times")
    ap.add_argument("--model", default="ddpm-digits", choices=["ddpm-digits", "lcm-tiny"])
    ap.add_argument("--steps", type=int, default=None, help="solver steps (default: the model's own)")
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=20)
    args = ap.parse_args()

    import ray
    from ray import serve as ray_serve

    tmp = tempfile.mkdtemp(prefix="zoo-bench-")
    torch.manual_seed(0)
    model = zoo.build(args.model).eval()
    steps = args.steps or model.spec.sampling.steps
    params = sum(p.numel() for p in model.parameters())
    weights = f"{tmp}/weights.safetensors"
    save_file({k: v.contiguous() for k, v in model.trainable_state_dict().items()}, weights)
    ray.init(num_cpus=4, include_dashboard=False, configure_logging=False, log_to_driver=False)
    common = {"weights": weights, "resources": {"num_cpus": 1}, "limits": {"max_n": 16}}
    modes = {"batched": {"enabled": True, "max_images": 16, "wait_s": 0.01},
             "unbatched": {"enabled": False, "max_images": 16}}
    totals = {m: [0.0, 0.0, []] for m in modes}  # images, seconds, requests per call
    torch.set_num_threads(1)  # in process, the thread count of a replica with num_cpus=1
    try:
        port = free_port()
        served = {m: zoo.serve(args.model, name="digits", app_name=m, route_prefix=f"/{m}", port=port,
                               batching=b, **common) for m, b in modes.items()}
        for _ in range(args.rounds):  # alternate, so that load from elsewhere hits both alike
            for m in modes:
                secs = args.seconds / args.rounds
                ips, per_call = throughput(served[m], "digits", model, args.clients, secs, steps)
                totals[m][0] += ips * secs
                totals[m][1] += secs
                totals[m][2].append(per_call)
        # one request at a time: the endpoint (default batching config) and model.sample, interleaved
        c = served["batched"].client()
        cond = conditioning(model, 7)
        model.sample(1, steps=steps, seed=0, **cond)
        ep, inproc = [], []
        for i in range(args.repeats):
            ep += latencies(lambda _: c.generate("digits", n=1, steps=steps, seed=i, **cond), 1)
            inproc += latencies(lambda _: model.sample(1, steps=steps, seed=i, **cond), 1)
        batch_s = statistics.median(latencies(lambda i: model.sample(args.clients, steps=steps, seed=i, **cond), 3))
        inproc_batch = args.clients / batch_s
    finally:
        ray_serve.shutdown()
        ray.shutdown()

    b_ips, u_ips = (totals[m][0] / totals[m][1] for m in modes)
    b_req, u_req = (float(np.mean(totals[m][2])) for m in modes)
    print(f"{args.model} ({params / 1e6:.1f}M parameters), {steps} {model.spec.sampling.solver.kind} steps, "
          f"1 replica x 1 CPU, {args.clients} clients, "
          f"{args.seconds:.0f} s per mode in {args.rounds} alternating rounds")
    print(f"throughput batched   : {b_ips:7.2f} images/s  (mean {b_req:.1f} requests per network call)")
    print(f"throughput unbatched : {u_ips:7.2f} images/s  (mean {u_req:.1f})")
    print(f"in-process model.sample({args.clients}) : {inproc_batch:7.2f} images/s  (one batched call, no HTTP)")
    print(f"RATIO batched / unbatched throughput        : {b_ips / u_ips:.2f}x")
    print(f"RATIO batched endpoint / in-process batch   : {b_ips / inproc_batch:.2f}x")
    print(f"latency endpoint   p50 {1e3 * pct(ep, 50):7.1f} ms   p99 {1e3 * pct(ep, 99):7.1f} ms  (batching wait 10 ms included)")
    print(f"latency in-process p50 {1e3 * pct(inproc, 50):7.1f} ms   p99 {1e3 * pct(inproc, 99):7.1f} ms")
    print(f"RATIO endpoint / in-process latency         : p50 {pct(ep, 50) / pct(inproc, 50):.2f}x   "
          f"p99 {pct(ep, 99) / pct(inproc, 99):.2f}x   (overhead p50 {1e3 * (pct(ep, 50) - pct(inproc, 50)):.1f} ms)")
    print(f"(stdev endpoint {1e3 * statistics.pstdev(ep):.1f} ms, in-process {1e3 * statistics.pstdev(inproc):.1f} ms)")


if __name__ == "__main__":
    main()
