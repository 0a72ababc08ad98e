"""`zoo submit` against a real head node (`ray start --head` with a dashboard, started and stopped
here, its own ports and temp dir): the job trains ddpm-digits for a few steps and SUCCEEDED; a
job that fails makes `zoo submit` exit non-zero."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.conftest import free_port, tiny_overrides
from zoo import checkpoint as ckpt
from zoo.cli import app

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def head_node():
    bin_dir = Path(sys.executable).parent
    temp = tempfile.mkdtemp(prefix="zoo-ray-", dir="/tmp")  # short: Ray's socket paths are length-limited
    dashboard = free_port()
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "RAY_AUTH_MODE": "disabled"}
    env.pop("RAY_ADDRESS", None)
    ports = {p: free_port() for p in ("port", "ray-client-server-port", "dashboard-agent-listen-port",
                                       "dashboard-agent-grpc-port", "metrics-export-port", "runtime-env-agent-port")}
    cmd = [str(bin_dir / "ray"), "start", "--head", "--block", "--num-cpus=3", "--include-dashboard=true",
           "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}", f"--temp-dir={temp}",
           "--disable-usage-stats", *[f"--{k}={v}" for k, v in ports.items()]]
    log = open(Path(temp) / "head.log", "w")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{dashboard}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(url + "/api/version", timeout=2).read()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"ray start --head did not come up: {(Path(temp) / 'head.log').read_text()[-2000:]}")
                time.sleep(1)
        yield url
    finally:  # the head node, its raylet, workers and job drivers: this process group only
        os.killpg(proc.pid, signal.SIGTERM)
        try:  # a graceful stop, briefly: what is left of the group is killed below either way
            proc.wait(3)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        log.close()


def test_submit_trains_on_the_cluster_and_reports_success(head_node, tmp_path):
    pairs = [f"{k}={json.dumps(v)}" for k, v in tiny_overrides(steps=3, workers=1, output=str(tmp_path)).items()]
    r = CliRunner().invoke(app, ["submit", "ddpm-digits", *pairs, "--address", head_node])
    assert r.exit_code == 0, r.output
    assert r.stdout.startswith("job: raysubmit_") and r.stdout.rstrip().endswith("SUCCEEDED")
    assert "checkpoint:" in r.stdout, "the job's logs were followed"
    run_dir = next(tmp_path.iterdir())
    assert ckpt.latest(str(run_dir)).endswith("step_00000003")


def test_submit_exits_with_the_failed_job_status(head_node, tmp_path):
    pairs = [f"{k}={json.dumps(v)}" for k, v in tiny_overrides(output=str(tmp_path), data=str(tmp_path / "gone.safetensors")).items()]
    r = CliRunner().invoke(app, ["submit", "ddpm-digits", *pairs, "--address", head_node])
    assert r.exit_code == 1 and "FAILED" in r.stderr and "gone.safetensors" in r.stdout
