"""What a user of `zoo train` sees: one progress bar (one final line when output is not a
terminal), then where the checkpoint, grid, loss plot and Ray's log are; Ray's own output in
<run>/ray.log unless --verbose; the embedded cluster listens on loopback only."""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import tiny_overrides

ROOT = Path(__file__).resolve().parents[1]
RAY_LINES = ("INFO", "WARNING", "Traceback", "Reporting training result", "Token authentication", "(RayTrainWorker",
             "TrainController", "pid=")


def zoo_train(tmp_path: Path, *extra: str, **overrides) -> subprocess.Popen:
    """`zoo train` of a tiny ddpm-digits started in a fresh process whose stdout and stderr are
    not a tty (files in tmp_path: nobody reads a pipe while it runs, and a full one would stall it);
    :func:`finished` waits for it."""
    pairs = [f"{k}={json.dumps(v)}" for k, v in tiny_overrides(grid_samples=4, **overrides).items()]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("RAY_ADDRESS", None)
    cmd = [sys.executable, "-m", "zoo.cli", "train", "ddpm-digits", *pairs, "--output", str(tmp_path), *extra]
    with open(tmp_path / "stdout", "w") as out, open(tmp_path / "stderr", "w") as err:
        return subprocess.Popen(cmd, stdout=out, stderr=err, env=env, cwd=ROOT)


def check_quiet(r: subprocess.CompletedProcess, tmp_path: Path, steps: int) -> Path:
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    bars = [line for line in r.stderr.splitlines() if line.startswith("train ddpm-digits")]
    assert len(bars) == 1 and f"{steps}/{steps}" in bars[0] and "loss=" in bars[0] and "img/s=" in bars[0], out
    assert "\r" not in out, "a bar that redraws its line in a pipe: " + repr(out)
    noise = [line for line in out.splitlines() if any(s in line for s in RAY_LINES)]
    assert noise == [], f"Ray's own lines reached the terminal: {noise}"
    (run_dir,) = tmp_path.glob("ddpm-digits-*")
    said = dict(line.split(":", 1) for line in r.stdout.splitlines() if ":" in line)
    assert {"run", "checkpoint", "samples", "loss plot", "Ray's log"} <= said.keys(), r.stdout
    for what in ("samples", "loss plot", "Ray's log"):
        assert Path(said[what].strip()).is_file() and Path(said[what].strip()).parent == run_dir, r.stdout
    return run_dir


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="reads listening sockets from Linux's /proc")
def test_train_on_the_embedded_cluster_is_quiet_and_listens_on_loopback_only(tmp_path, side_runs):
    """One Ray Train worker on a fresh embedded cluster: the controller's and the worker's
    output land in ray.log, the terminal has the bar and the summary only. Every TCP port the
    cluster's processes (GCS, raylet, agents, workers, the driver) listen on while it trains is
    bound to a loopback address (issue 11 item 7)."""
    proc = zoo_train(tmp_path, steps=4, workers=1)
    ports: dict[tuple, dict] = {}
    deadline = time.monotonic() + 900
    while proc.poll() is None and time.monotonic() < deadline:  # the whole process tree's listeners, while it runs
        ports.update({(p["pid"], p["ip"], p["port"]): p for p in listening(process_tree(proc.pid))})
        time.sleep(0.5)
    if proc.poll() is None:
        proc.kill()
    run_dir = check_quiet(finished(proc, tmp_path), tmp_path, 4)
    assert (run_dir / "ray.log").stat().st_size > 0
    found = sorted(ports.values(), key=lambda p: (p["pid"], p["port"]))
    assert len({p["pid"] for p in found}) >= 3, f"found too few listening processes to judge (GCS, raylet, driver at least): {found}"
    exposed = [p for p in found if not is_loopback(p["ip"])]
    assert exposed == [], f"ports of the embedded cluster on non-loopback addresses: {exposed} (all: {found})"


@pytest.fixture(scope="module")
def side_runs(tmp_path_factory):
    """The pipe run and the --verbose run (workers=0: Ray Train's local mode, no cluster), started
    together when the module's first test asks: each is a fresh process importing Ray and torch
    (about 15 s alone), mostly one core's work, so the two of them and the embedded-cluster run
    above share the two cores."""
    pipe, verbose = tmp_path_factory.mktemp("pipe"), tmp_path_factory.mktemp("verbose")
    procs = {"pipe": (zoo_train(pipe, steps=4), pipe),
             "verbose": (zoo_train(verbose, "--verbose", steps=2), verbose)}
    yield procs
    for proc, _ in procs.values():
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def finished(proc: subprocess.Popen, folder: Path, timeout: float = 900) -> subprocess.CompletedProcess:
    """A ``zoo_train(...)`` run once it ended, as ``subprocess.run`` returns it."""
    try:
        rc = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        rc = proc.wait()
    out, err = ((folder / name).read_text() for name in ("stdout", "stderr"))
    return subprocess.CompletedProcess(proc.args, rc, out, err)


@pytest.mark.slow  # a fresh process importing Ray and torch
def test_train_in_a_pipe_prints_one_bar_line_and_logs_ray_to_the_run_folder(side_runs):
    proc, folder = side_runs["pipe"]
    run_dir = check_quiet(finished(proc, folder), folder, 4)
    log = (run_dir / "ray.log").read_text()
    assert "local mode" in log, f"Ray Train's local-mode notice should be in ray.log: {log!r}"


@pytest.mark.slow  # a fresh process importing Ray and torch
def test_verbose_shows_ray_and_writes_no_log_file(side_runs):
    proc, folder = side_runs["verbose"]
    r = finished(proc, folder)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "local mode" in r.stderr, r.stderr
    (run_dir,) = folder.glob("ddpm-digits-*")
    assert not (run_dir / "ray.log").exists() and "Ray's log" not in r.stdout


def is_loopback(ip: str) -> bool:
    addr = ipaddress.ip_address(ip)
    mapped = getattr(addr, "ipv4_mapped", None)
    return (mapped or addr).is_loopback


def process_tree(root: int) -> list[int]:
    """root and its descendants, from /proc/<pid>/stat's parent pids."""
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    tree, frontier = [root], [root]
    while frontier:
        frontier = [pid for pid, parent in parents.items() if parent in frontier]
        tree += frontier
    return tree


def listening(pids: list[int]) -> list[dict]:
    """TCP sockets in LISTEN state owned by ``pids``: [{"pid", "ip", "port"}]."""
    owner = {}
    for pid in pids:
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
                if link.startswith("socket:["):
                    owner[link[8:-1]] = pid
        except OSError:  # a process that ended meanwhile
            continue
    found = []
    for table, v6 in (("/proc/net/tcp", False), ("/proc/net/tcp6", True)):
        if not Path(table).exists():
            continue
        for row in Path(table).read_text().splitlines()[1:]:
            cols = row.split()
            if cols[3] != "0A" or cols[9] not in owner:  # 0A: LISTEN
                continue
            hex_ip, hex_port = cols[1].split(":")
            raw = bytes.fromhex(hex_ip)
            if v6:  # four little-endian 32-bit words
                raw = b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))
                ip = str(ipaddress.IPv6Address(raw))
            else:
                ip = str(ipaddress.IPv4Address(raw[::-1]))
            found.append({"pid": owner[cols[9]], "ip": ip, "port": int(hex_port, 16)})
    return found


def test_every_cluster_the_zoo_starts_is_the_loopback_one(monkeypatch):
    """zoo.train (above), zoo.serve and zoo.evaluate(workers=N) start a cluster of their own
    through zoo.local_cluster.start, whose ports the test above finds on loopback only; every
    other ray.init in the package joins an address."""
    import ast

    import ray

    from zoo import local_cluster

    calls = []
    for pkg in ("components", "zoo", "jobs", "serve"):
        for path in (ROOT / pkg).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Call) and ast.unparse(node.func) == "ray.init":
                    calls.append((str(path.relative_to(ROOT)), {k.arg for k in node.keywords}))
    own = [path for path, kw in calls if "address" not in kw]
    assert own == ["zoo/local_cluster.py"], calls

    class Started(Exception):
        pass

    def start(num_cpus, **kw):
        raise Started(num_cpus, kw)

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(local_cluster, "start", start)
    from serve.run import serve
    from zoo.evaluation.sampling import _run_ray

    import zoo

    with pytest.raises(Started):
        serve(zoo.build(zoo.get("ddpm-digits", **tiny_overrides())))
    with pytest.raises(Started):
        next(_run_ray([], [], 2, None))


def test_the_embedded_cluster_keeps_token_auth_without_its_notice():
    """Ray logs a notice when it turns token authentication on for a new local cluster; while the
    embedded cluster starts, that logger (named in zoo/local_cluster.py) is silenced and restored."""
    import logging

    from ray._private.authentication import authentication_token_setup as auth

    from zoo import local_cluster

    assert auth.logger.name == local_cluster.AUTH_NOTICE_LOGGER
    seen: list[str] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: seen.append(record.getMessage())
    auth.logger.addHandler(handler)
    try:
        with local_cluster._without_auth_notice():
            auth._warn_token_auth_enabled()
        assert seen == []
        auth._warn_token_auth_enabled()
        assert seen and seen[0].startswith("Token authentication is enabled")  # the logger is itself again
    finally:
        auth.logger.removeHandler(handler)
