"""Ray's own output of a run goes to ``<run>/ray.log`` instead of the terminal.

Starting a cluster and running a TorchTrainer print from many places: Ray's C++ core writes
notices straight to file descriptor 2 (the token-authentication notice), the driver forwards
every worker's and the controller's stdout and stderr (log_to_driver), and Ray Train's Python
loggers report each result. None of it has a public switch of its own, so while a run starts
and trains, this process's descriptors 1 and 2 point at the log file, and whatever must still
reach the user (the progress bar) writes to ``terminal``: a copy of the original stderr.
``verbose=True`` leaves the descriptors alone: everything shows, as Ray prints it.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from typing import IO, Iterator

import fsspec

from jobs.storage import is_local, join

RAY_LOG = "ray.log"


@contextlib.contextmanager
def to_run_folder(run_dir: str, verbose: bool = False) -> Iterator[IO[str]]:
    """Yields the stream the user sees (stderr). The log file is ``<run>/ray.log``, written in
    place on a local run folder and uploaded at the end to any other."""
    if verbose or not _has_fds():
        yield sys.stderr
        return
    local = is_local(run_dir)
    url = join(run_dir, RAY_LOG)
    path = fsspec.core.url_to_fs(url)[1] if local else tempfile.mkstemp(prefix="zoo-ray-", suffix=".log")[1]
    sys.stdout.flush(), sys.stderr.flush()
    saved = {fd: os.dup(fd) for fd in (1, 2)}
    log = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    terminal = os.fdopen(os.dup(saved[2]), "w", buffering=1)
    try:
        for fd in (1, 2):
            os.dup2(log, fd)
        yield terminal
    finally:
        sys.stdout.flush(), sys.stderr.flush()
        for fd, original in saved.items():
            os.dup2(original, fd)
            os.close(original)
        os.close(log)
        terminal.close()
        if not local:
            fs, remote = fsspec.core.url_to_fs(url)
            fs.put_file(path, remote)
            os.unlink(path)


def url(run_dir: str) -> str | None:
    """``<run>/ray.log`` when the run wrote one."""
    u = join(run_dir, RAY_LOG)
    fs, path = fsspec.core.url_to_fs(u)
    return u if fs.exists(path) else None


def _has_fds() -> bool:
    """Descriptors 1 and 2 exist (not so in some notebooks and embedded interpreters)."""
    try:
        os.fstat(1), os.fstat(2)
        return True
    except OSError:
        return False
