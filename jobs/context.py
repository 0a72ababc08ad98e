"""Where a worker runs: its rank, device, how it reports metrics and checkpoints, and where it
finds the checkpoint to resume from. The loop is written against this, so the same loop runs
in-process (LocalContext) and inside a Ray Train TorchTrainer (jobs.ray_context)."""

from __future__ import annotations

import json
import posixpath
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import fsspec
import torch
from torch import nn

from zoo import checkpoint as ckpt


class WorkerContext(ABC):
    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @abstractmethod
    def report(self, metrics: dict[str, Any], checkpoint_dir: Path | None = None) -> None:
        """Log metrics; with a checkpoint folder (written by rank 0), persist it."""

    @abstractmethod
    def latest_checkpoint(self) -> str | None:
        """URL of the newest complete checkpoint to resume from, or None."""

    def wrap(self, module: nn.Module) -> nn.Module:
        """Wrap the trainable module for data parallelism (identity for one process)."""
        return module


class LocalContext(WorkerContext):
    """One process; checkpoints go to run_dir/checkpoints/step_N on any fsspec URL."""

    def __init__(self, run_dir: str, keep: int, resume_from: str | None = None, device: str | None = None):
        self.run_dir = run_dir.rstrip("/")
        self.keep = keep
        self.resume_from = resume_from
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.fs, self.path = fsspec.core.url_to_fs(self.run_dir)
        self.fs.makedirs(self.path, exist_ok=True)
        self.metrics = self._read_metrics()

    def _read_metrics(self) -> list[dict[str, Any]]:
        path = posixpath.join(self.path, "metrics.jsonl")
        if not self.fs.exists(path):
            return []
        with self.fs.open(path, "r") as f:
            return [json.loads(line) for line in f if line.strip()]

    def report(self, metrics: dict[str, Any], checkpoint_dir: Path | None = None) -> None:
        # a resumed run repeats the steps after its checkpoint: keep the newer rows
        self.metrics = [m for m in self.metrics if m.get("step", -1) < metrics.get("step", 0)]
        self.metrics.append(metrics)
        if checkpoint_dir is not None:
            root = posixpath.join(self.run_dir, "checkpoints")
            ckpt.upload(checkpoint_dir, posixpath.join(root, ckpt.step_dir(metrics["step"])))
            ckpt.prune(root, self.keep)
            self.flush()

    def flush(self) -> None:
        with self.fs.open(posixpath.join(self.path, "metrics.jsonl"), "w") as f:
            f.writelines(json.dumps(m) + "\n" for m in self.metrics)

    def latest_checkpoint(self) -> str | None:
        return ckpt.latest(self.resume_from) if self.resume_from else None
