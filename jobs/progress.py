"""The training progress bar: counted in the worker, drawn by the process that called zoo.train.

The worker of rank 0 writes ``<run>/progress.json`` (step, total, loss, img/s) at most once a
second (``FileBar``); the caller polls it (``Watcher``) and draws one tqdm bar with step, loss,
img/s and ETA. On a terminal the bar redraws in place; when the stream is not a terminal (a log
file, CI, a pipe) nothing is drawn while training and one final line is written at the end, so
the output never repeats its line. A file on the run's storage rather than Ray's log stream
means the same bar whether the worker runs here, on another node, or in this process
(workers=0), and none of Ray's own output has to reach the terminal for it.
"""

from __future__ import annotations

import json
import threading
import time
from typing import IO, Any

import fsspec

from jobs.storage import join
from zoo.urls import write_whole

PROGRESS = "progress.json"


class FileBar:
    """The worker's side: tqdm's update / set_postfix / close, written to ``<run>/progress.json``."""

    def __init__(self, run_dir: str, total: int, initial: int, every: float = 1.0):
        self.url, self.every = join(run_dir, PROGRESS), every
        self.state: dict[str, Any] = {"step": initial, "total": total, "initial": initial}
        self.last = 0.0
        self._write()

    def update(self, n: int = 1) -> None:
        self.state["step"] += n
        if time.monotonic() - self.last >= self.every:
            self._write()

    def set_postfix(self, **kw) -> None:
        self.state.update(kw)

    def close(self) -> None:
        self._write()

    def _write(self) -> None:
        self.last = time.monotonic()
        write_whole(self.url, json.dumps(self.state).encode())  # readers never see a half-written file


def clear(run_dir: str) -> None:
    """Forget an earlier run's progress (a resumed run starts its bar afresh)."""
    fs, path = fsspec.core.url_to_fs(join(run_dir, PROGRESS))
    if fs.exists(path):
        fs.rm(path)


def read(run_dir: str) -> dict[str, Any] | None:
    fs, path = fsspec.core.url_to_fs(join(run_dir, PROGRESS))
    try:
        with fs.open(path, "r") as f:
            return json.load(f)
    except (FileNotFoundError, ValueError):
        return None


class Watcher:
    """The caller's side: polls progress.json in a thread and draws the bar on ``stream``."""

    def __init__(self, run_dir: str, total: int, desc: str, stream: IO[str], poll: float = 0.5):
        from tqdm import tqdm

        self.run_dir, self.desc, self.stream, self.poll = run_dir, desc, stream, poll
        self.tty = stream.isatty()
        self.bar = tqdm(total=total, desc=desc, unit="step", file=stream, dynamic_ncols=True,
                        disable=not self.tty, smoothing=0.1)
        self.t0, self.state = time.monotonic(), None
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="zoo-progress", daemon=True)

    def __enter__(self) -> Watcher:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()
        self._refresh()
        if self.tty:
            self.bar.close()
        elif self.state is not None:  # one line, once
            self.stream.write(self.line() + "\n")
            self.stream.flush()

    def _run(self) -> None:
        while not self.stop.wait(self.poll):
            self._refresh()

    def _refresh(self) -> None:
        state = read(self.run_dir)
        if state is None:
            return
        if self.state is None:  # a resumed run starts at its checkpoint's step
            self.bar.reset(total=state["total"])
            self.bar.update(state["initial"])
            self.bar.last_print_n = self.bar.n
        self.state = state
        self.bar.set_postfix_str(postfix(state), refresh=False)
        self.bar.update(state["step"] - self.bar.n)

    def line(self) -> str:
        """The bar's final line: desc, step/total, elapsed, rate, loss, img/s."""
        s = self.state
        return self.bar.format_meter(s["step"], s["total"], time.monotonic() - self.t0, prefix=self.desc,
                                     unit="step", postfix=postfix(s), initial=s["initial"])


def postfix(state: dict[str, Any]) -> str:
    """loss and img/s as the loop's set_postfix gave them (loss=..., img_s=...)."""
    return ", ".join(f"{shown}={state[k]}" for k, shown in (("loss", "loss"), ("img_s", "img/s")) if k in state)
