"""A node dies, not just a worker (issue 11, item 10): on a two-node Ray cluster on 127.0.0.1 (a
head from ``ray start --head`` and a second ``ray start --address`` node, 2 CPUs each), a 2-worker
run with one worker on each node and checkpoints on the S3 API server loses the second node
mid-run (its raylet and workers SIGKILLed); Ray Train restarts the worker group from the last
complete checkpoint once the node is back, and the run ends bit-identical to one that never
stopped (the same spec on the session's one-node cluster: 2 ranks of gloo sum the same two
numbers wherever they run). The same for a job from `zoo submit`: its driver runs on the head, the
second node dies mid-run, and the job SUCCEEDS with a run that restarted from a checkpoint and
ends bit-identical. Every process the tests start is ended by its id."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import fsspec
import pytest
import torch

from tests.conftest import free_port, tiny_overrides
from zoo import checkpoint as ckpt

pytestmark = [pytest.mark.slow]
psutil = pytest.importorskip("psutil")

# 8 steps, checkpoints after 3, 6 and 8; one worker per node (2 CPUs each); the node dies after step 4
RUN = tiny_overrides(steps=8, checkpoint_every=3, keep_checkpoints=3, batch_size=16, workers=2,
                     cpus_per_worker=2.0, max_failures=3)
RAY = str(Path(sys.executable).with_name("ray"))

DRIVER = r'''
import json, os, sys, time
import ray
import zoo
from jobs import cluster
from jobs.callbacks import Callback


class HoldAfter(Callback):
    """Records each rank's node; every rank stops after step `step` until `release` exists."""

    def __init__(self, folder, step):
        self.folder, self.step = folder, step

    def on_train_start(self, step, rank):
        path = os.path.join(self.folder, f"node-{rank}")
        if not os.path.exists(path):
            with open(path, "w") as f:
                f.write(ray.get_runtime_context().get_node_id())

    def on_step_end(self, step, rank, row):
        if step == self.step and not os.path.exists(os.path.join(self.folder, "release")):
            open(os.path.join(self.folder, "reached"), "a").close()
            deadline = time.time() + 600
            while not os.path.exists(os.path.join(self.folder, "release")) and time.time() < deadline:
                time.sleep(0.2)


a = json.loads(sys.argv[1])
ray.init(address=a["address"], runtime_env=cluster.code_runtime_env(), log_to_driver=False)
deadline = time.time() + 300
while ray.cluster_resources().get("CPU", 0) < 4:  # both nodes
    assert time.time() < deadline, ray.cluster_resources()
    time.sleep(0.5)
run = zoo.train("ddpm-digits", output=a["output"], progress=False, callbacks=[HoldAfter(a["folder"], a["hold"])],
                **a["overrides"])
print("RESULT " + json.dumps({"dir": run.dir, "checkpoint": run.checkpoint}), flush=True)
'''


class Node:
    """One ``ray start --block`` process and everything it starts, ended by process id."""

    def __init__(self, args: list[str], log: Path):
        self.log = open(log, "ab")
        # loopback only: no token to share between the nodes; a job's `python` is this venv's
        env = {**os.environ, "RAY_AUTH_MODE": "disabled", "PATH": f"{Path(RAY).parent}{os.pathsep}{os.environ['PATH']}"}
        env.pop("RAY_ADDRESS", None)
        self.proc = subprocess.Popen([RAY, "start", "--block", "--disable-usage-stats", "--node-ip-address=127.0.0.1",
                                      "--num-cpus=2", "--num-gpus=0", "--object-store-memory=100000000", *args, *ports()],
                                     stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True, env=env)

    def kill(self, sig=signal.SIGKILL) -> None:
        try:
            procs = [psutil.Process(self.proc.pid), *psutil.Process(self.proc.pid).children(recursive=True)]
        except psutil.NoSuchProcess:
            procs = []
        for p in reversed(procs):  # workers and raylet first, then `ray start`
            try:
                p.send_signal(sig)
            except psutil.NoSuchProcess:
                pass
        _, alive = psutil.wait_procs(procs, timeout=20)
        for p in alive:
            p.kill()
        self.proc.wait(timeout=30)
        self.log.close()


def ports() -> list[str]:
    names = ["node-manager-port", "object-manager-port", "dashboard-agent-listen-port", "dashboard-agent-grpc-port",
             "runtime-env-agent-port", "metrics-export-port"]
    return [f"--{n}={free_port()}" for n in names]


@pytest.fixture(scope="module")
def two_nodes(s3_server, tmp_path_factory):
    """A head (with the job server of its dashboard) and a second node on 127.0.0.1, started
    after the S3 server (they inherit its endpoint); yields (address, the dashboard's URL, start
    the second node again, the nodes)."""
    logs = tmp_path_factory.mktemp("nodes")
    temp = tempfile.mkdtemp(prefix="zr-", dir="/tmp")  # short: Ray's socket paths have a length limit
    port, dashboard = free_port(), free_port()
    address = f"127.0.0.1:{port}"
    head = Node(["--head", f"--port={port}", "--include-dashboard=true", "--dashboard-host=127.0.0.1",
                 f"--dashboard-port={dashboard}", f"--temp-dir={temp}", f"--ray-client-server-port={free_port()}"],
                logs / "head.log")
    nodes = {"second": None}

    def start_second() -> Node:
        nodes["second"] = Node([f"--address={address}"], logs / "second.log")
        return nodes["second"]

    try:
        time.sleep(3)  # the head's GCS up before the second node joins
        start_second()
        yield address, f"http://127.0.0.1:{dashboard}", start_second, nodes
    finally:
        if nodes["second"] is not None:
            nodes["second"].kill()
        head.kill()
        for p in psutil.process_iter(["pid", "cmdline"]):  # anything of this cluster left behind
            if any(temp in part for part in (p.info["cmdline"] or [])):
                try:
                    p.kill()
                except psutil.NoSuchProcess:
                    pass
        shutil.rmtree(temp, ignore_errors=True)


def drive(address: str, output: str, folder: Path, hold: int, tmp_path: Path) -> subprocess.Popen:
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    args = {"address": address, "output": output, "folder": str(folder), "hold": hold, "overrides": RUN}
    return subprocess.Popen([sys.executable, str(script), json.dumps(args)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "RAY_ADDRESS": address, "RAY_AUTH_MODE": "disabled"})


def result(proc: subprocess.Popen, timeout: float = 600) -> dict:
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out[-6000:]
    return json.loads(next(line for line in out.splitlines() if line.startswith("RESULT "))[7:])


def wait_for(done, what: str, proc: subprocess.Popen, output, timeout: float = 600, poll: float = 0.5) -> None:
    """Until ``done()``; fails with ``output()`` when ``proc`` ends first, or after ``timeout``."""
    deadline = time.time() + timeout
    while not done():
        assert proc.poll() is None, output()[-6000:]
        assert time.time() < deadline, f"{what} not in {timeout:.0f} s"
        time.sleep(poll)


def uninterrupted(request, **overrides):
    """The run that never stopped: trained once per spec and code (tests/train_cache.py) on the
    session's cluster."""
    from tests.train_cache import cached_train

    return cached_train(request.getfixturevalue("tmp_path_factory"), "ddpm-digits",
                        before=lambda: request.getfixturevalue("ray_cluster"), **overrides)


def assert_bit_identical(a: str, b: str) -> None:
    for name in ("model.safetensors", "ema.safetensors", "optimizer.safetensors"):
        x, y = ckpt.Checkpoint(a).tensors(name), ckpt.Checkpoint(b).tensors(name)
        assert x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x), name


@pytest.fixture()
def straight(request):
    return uninterrupted(request, **RUN)  # before the two nodes start (the argument order below)


def test_a_run_that_loses_a_node_restarts_when_it_returns_and_ends_bit_identical(straight, two_nodes, tmp_path):
    address, _, start_second, nodes = two_nodes
    s3 = fsspec.filesystem("s3")
    s3.mkdir("zoo-nodes")

    folder = tmp_path / "killed"
    folder.mkdir()
    proc = drive(address, "s3://zoo-nodes/killed", folder, 4, tmp_path)
    try:
        reached = folder / "reached"  # every rank is past step 4; step_00000003 is complete
        wait_for(reached.exists, str(reached), proc, lambda: proc.communicate()[0])
        ranks = [(folder / f"node-{r}").read_text() for r in range(2)]
        assert ranks[0] != ranks[1], "one worker on each node"
        nodes["second"].kill()  # the node dies: raylet, its workers and `ray start`
        (folder / "release").touch()
        time.sleep(5)
        start_second()  # resources return: Ray Train starts the group again
        killed = result(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    assert killed["checkpoint"].endswith("step_00000008") and straight.checkpoint.endswith("step_00000008")
    rows = [json.loads(line) for line in s3.cat_file(f"{killed['dir']}/metrics.jsonl").decode().splitlines()]
    resumed = [r for r in rows if r.get("event") == "resumed"]
    assert resumed and resumed[-1]["step"] == 3, "the group restarted from step_00000003"
    assert_bit_identical(straight.checkpoint, killed["checkpoint"])


# 12 steps, checkpointed every 3 (about 1.5 s a step across the two nodes): a job cannot be held by a
# callback, so the node dies once two checkpoints are complete, with steps 7..12 still to run
SUBMITTED = {**RUN, "steps": 12, "keep_checkpoints": 2}


@pytest.fixture()
def straight_12(request):
    return uninterrupted(request, **SUBMITTED)


def test_a_submitted_job_survives_the_loss_of_a_worker_node(straight_12, two_nodes, tmp_path):
    """`zoo submit` to the same two nodes (the job's driver runs on the head): the second node is
    killed once the run has two complete checkpoints and started again 5 s later; the job
    SUCCEEDS, its run restarted from a checkpoint and ended bit-identical to one that never stopped."""
    _, dashboard, start_second, nodes = two_nodes
    s3 = fsspec.filesystem("s3")
    s3.mkdir("zoo-jobs")
    pairs = [f"{k}={json.dumps(v)}" for k, v in {**SUBMITTED, "output": "s3://zoo-jobs/runs"}.items()]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "RAY_AUTH_MODE": "disabled"}
    env.pop("RAY_ADDRESS", None)
    with open(tmp_path / "submit.log", "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "zoo.cli", "submit", "ddpm-digits", *pairs, "--address", dashboard],
                                stdout=log, stderr=subprocess.STDOUT, env=env)
    def two_checkpoints() -> bool:
        # the older one is surely registered with Ray Train (a node that dies while the first is
        # uploaded restarts the run from step 0, which proves less)
        s3.invalidate_cache()  # s3fs keeps listings: list anew each time
        return len(s3.glob("zoo-jobs/runs/ddpm-digits-*/checkpoints/step_*/manifest.json")) >= 2

    try:
        wait_for(two_checkpoints, "two complete checkpoints", proc, (tmp_path / "submit.log").read_text, poll=0.2)
        nodes["second"].kill()
        time.sleep(5)
        start_second()
        rc = proc.wait(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    out = (tmp_path / "submit.log").read_text()
    assert rc == 0 and out.rstrip().endswith("SUCCEEDED"), out[-6000:]
    (run_dir,) = s3.glob("zoo-jobs/runs/ddpm-digits-*")
    rows = [json.loads(line) for line in s3.cat_file(f"{run_dir}/metrics.jsonl").decode().splitlines()]
    resumed = [r["step"] for r in rows if r.get("event") == "resumed"]
    assert resumed, f"the run never restarted: the node died too late? {out[-3000:]}"
    assert_bit_identical(straight_12.checkpoint, f"s3://{run_dir}/checkpoints/step_00000012")
    print(f"the job's run restarted from step {resumed} and ended bit-identical")
