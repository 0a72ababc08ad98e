"""Autoscaling through real HTTP: with small delays and fractional CPUs per replica, sustained
load grows a model's deployment past min_replicas, and it shrinks back once the load stops."""

from __future__ import annotations

import threading
import time

import pytest

import zoo
from tests.conftest import tiny_overrides
from tests.serve_support import untrained_weights

pytestmark = pytest.mark.slow

AUTOSCALING = {
    "min_replicas": 1, "max_replicas": 3, "target_ongoing_requests": 1,
    "upscale_delay_s": 0.5, "downscale_delay_s": 2.0, "metrics_interval_s": 0.5, "look_back_period_s": 1.0,
}


def wait_for(predicate, timeout: float, poll: float = 0.25) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(poll)
    return predicate()


def test_deployment_grows_under_sustained_load_and_shrinks_back(serve_instance, tmp_path):
    weights = untrained_weights(str(tmp_path / "weights.safetensors"))
    served = zoo.serve(
        {"model": "ddpm-digits", "name": "scaled", "weights": weights, "overrides": tiny_overrides()},
        app_name="autoscale", route_prefix="/autoscale", autoscaling=AUTOSCALING,
        resources={"num_cpus": 0.25}, batching={"enabled": False}, max_ongoing_requests=2, warmup_steps=0,
    )
    stop, errors, done = threading.Event(), [], []

    def load(k: int) -> None:
        client = served.client(timeout=60)
        for i in range(2000):  # bounded; stops as soon as the deployment has grown
            if stop.is_set():
                return
            try:
                client.generate("scaled", n=1, steps=20, seed=k * 10_000 + i)
                done.append(1)
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append(repr(e))

    threads = [threading.Thread(target=load, args=(k,)) for k in range(6)]
    try:
        assert served.replicas("scaled") == 1
        t0 = time.monotonic()
        for t in threads:
            t.start()
        grew = wait_for(lambda: served.replicas("scaled") > AUTOSCALING["min_replicas"], timeout=90)
        peak, t_grew = served.replicas("scaled"), time.monotonic() - t0
        stop.set()
        for t in threads:
            t.join(timeout=60)
        assert not errors, errors[:3]
        assert grew, f"still {peak} replica(s) after 90 s of load ({len(done)} requests served)"
        shrank = wait_for(lambda: served.replicas("scaled") == AUTOSCALING["min_replicas"], timeout=90)
        assert shrank, f"{served.replicas('scaled')} replicas 90 s after the load stopped (peak {peak})"
        print(f"grew to {peak} replicas after {t_grew:.1f} s of load; back to 1 {time.monotonic() - t0 - t_grew:.1f} s later")
        assert served.client().generate("scaled", n=1, steps=2, seed=0).images.shape == (1, 1, 16, 16)
    finally:
        stop.set()
        served.shutdown()
