"""Where a worker runs: its rank, device, how it reports metrics and checkpoints, and where it
finds the checkpoint to resume from. The loop is written against this; its one implementation
is jobs.ray_context.RayContext, for Ray Train workers and for Ray Train's local mode alike
(``workers=0`` runs the loop in the calling process)."""

from __future__ import annotations

import json
import posixpath
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import fsspec
import torch
from torch import nn
from tqdm.auto import tqdm



class WorkerContext(ABC):
    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")
    callbacks: tuple = ()
    bad_samples: Any = None  # the skipped-sample counter of a streamed run (on_bad_sample="skip")

    @abstractmethod
    def report(self, metrics: dict[str, Any], checkpoint_dir: Path | None = None) -> str | None:
        """Log metrics; with a checkpoint folder (written by rank 0), persist it and return its
        URL. Every rank calls this the same number of times (under Ray Train it is a barrier)."""

    @abstractmethod
    def latest_checkpoint(self) -> str | None:
        """URL of the newest complete checkpoint to resume from, or None."""

    def wrap(self, module: nn.Module) -> nn.Module:
        """Wrap the trainable module for data parallelism (identity for one process)."""
        return module

    def dataset_shard(self):
        """This worker's Ray Data iterator of streamed shards, or None (in-memory sources)."""
        return None

    def progress(self, **kw) -> Any:
        """A progress bar (tqdm's arguments)."""
        return tqdm(**kw)

    def event(self, row: dict[str, Any]) -> None:
        """Record a row in metrics.jsonl without a barrier (rank 0 only; e.g. a resume)."""


class MetricsLog:
    """metrics.jsonl of a run on any fsspec URL: rows kept in memory, rewritten on flush (object
    stores cannot append). A resumed run repeats the steps after its checkpoint: the repeated
    rows replace the old ones."""

    def __init__(self, run_dir: str):
        self.fs, root = fsspec.core.url_to_fs(run_dir)
        self.path = posixpath.join(root, "metrics.jsonl")
        self.rows: list[dict[str, Any]] = []
        if self.fs.exists(self.path):
            with self.fs.open(self.path, "r") as f:
                self.rows = [json.loads(line) for line in f if line.strip()]

    def add(self, row: dict[str, Any]) -> None:
        if "event" not in row:
            self.rows = [m for m in self.rows if "event" in m or m.get("step", -1) < row.get("step", 0)]
        self.rows.append(row)

    def flush(self) -> None:
        self.fs.makedirs(posixpath.dirname(self.path), exist_ok=True)
        with self.fs.open(self.path, "w") as f:
            f.writelines(json.dumps(m) + "\n" for m in self.rows)
