"""Trained runs shared by the tests: each spec is trained once per session, and kept under
``$ZOO_CACHE/test-runs`` (default ~/.cache/diffusion-zoo, as for the metrics' reference statistics)
for later sessions, keyed by the full spec and a hash of the package source, catalog and library
versions: a change to the code retrains. ``ZOO_TEST_RETRAIN=1`` ignores (and refreshes) the disk
copies. Every caller gets its own copy of the run folder, so a test that writes into it (an eval
folder, a resumed run) changes nothing another test sees."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Iterator

import zoo
from zoo import checkpoint as ckpt
from zoo.run import Run
from zoo.specs import RunSpec

ROOT = Path(__file__).resolve().parents[1]
_session: dict[str, Path] = {}  # spec key -> a complete run folder made or found in this session


@lru_cache(maxsize=1)
def source_hash() -> str:
    """The package source a training run imports (every .py of components, zoo and jobs; serve
    sits beside jobs and no training path imports it: tests/test_layers.py), the catalog and the
    versions of torch and Ray: what a trained run depends on besides its spec."""
    import ray
    import torch

    h = hashlib.sha256(f"torch {torch.__version__} ray {ray.__version__}".encode())
    files = sorted(p for pkg in ("components", "zoo", "jobs") for p in (ROOT / pkg).rglob("*.py"))
    for path in [*files, ROOT / "catalog.yaml"]:
        h.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def spec_key(spec: RunSpec) -> str:
    """Everything of the spec but where it is written (workers and parallelism included: runs
    that differ only there are what the equivalence tests compare)."""
    body = spec.model_dump(mode="json")
    body["train"].pop("output")
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]


def cache_root() -> Path:
    return Path(os.environ.get("ZOO_CACHE") or Path.home() / ".cache" / "diffusion-zoo") / "test-runs"


def load_run(spec: RunSpec, folder: Path) -> Run:
    """A Run for a complete run folder (what zoo.train returns for it)."""
    rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines() if line.strip()]
    grid = folder / "samples.png"
    return Run(spec.model_copy(update={"train": spec.train.model_copy(update={"output": str(folder.parent)})}),
               str(folder), ckpt.latest(str(folder)), grid=str(grid) if grid.is_file() else None, metrics=rows)


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock on ``path`` (flock; released when the holder exits, even killed), or
    none where the cache folder cannot be written."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        f = open(path, "a")
    except OSError:
        yield
        return
    with f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def cached_train(tmp_path_factory, name: str, *, before: Callable[[], Any] | None = None, **overrides: Any) -> Run:
    """``zoo.train(name, **overrides)`` once per spec and code (see the module docstring), as a
    fresh copy of the run folder under this session's temporary directory. ``before`` runs only
    when the run is really trained (e.g. to start the session's Ray cluster)."""
    spec = zoo.get(name, **{k: v for k, v in overrides.items() if k != "output"})
    key = f"{name}-{spec_key(spec)}-{source_hash()}"
    folder = _session.get(key)
    disk = cache_root() / key
    if folder is None:
        with _locked(disk.with_name(key + ".lock")):  # pytest workers that need it at once train it once
            if os.environ.get("ZOO_TEST_RETRAIN") != "1" and (disk / "complete").is_file():
                folder = next(p for p in disk.iterdir() if p.is_dir())
            else:
                if before is not None:
                    before()
                trained = zoo.train(name, output=str(tmp_path_factory.mktemp("trained")), progress=False, **overrides)
                folder = Path(trained.dir)
                try:  # keep a copy for later sessions; a read-only or full cache only costs the retraining
                    shutil.rmtree(disk, ignore_errors=True)
                    shutil.copytree(folder, disk / folder.name)
                    (disk / "complete").write_text(json.dumps({"spec": spec.model_dump(mode="json")}, indent=1))
                except OSError:
                    pass
    _session[key] = folder
    copy = tmp_path_factory.mktemp("run") / folder.name
    shutil.copytree(folder, copy)
    return load_run(spec, copy)
