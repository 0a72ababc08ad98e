"""The WorkerContext of a Ray Train worker: rank and device from ``ray.train.get_context()``,
metrics through ``ray.train.report``, checkpoints persisted by Ray Train to
``RunConfig(storage_path, storage_filesystem)`` with an upload function that publishes the
manifest last, resume from ``ray.train.get_checkpoint()``, DDP through
``ray.train.torch.prepare_model`` or FSDP2 sharding, and this worker's Ray Data shard."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn

from jobs import parallel
from jobs.context import MetricsLog, WorkerContext
from jobs.storage import join, pyarrow_fs, with_protocol
from zoo import checkpoint as ckpt


class RayContext(WorkerContext):
    def __init__(self, config: dict[str, Any]):
        import ray.train

        tc = ray.train.get_context()
        self.rank, self.world_size = tc.get_world_rank(), tc.get_world_size()
        self.local_mode = config["local_mode"]
        self.run_dir = config["run_dir"].rstrip("/")
        self.root = join(self.run_dir, "checkpoints")
        self.keep = config["keep"]
        self.resume_from = config["resume_from"]
        self.parallelism = config["parallelism"]
        self.streamed = config["streamed"]
        self.callbacks = tuple(config["callbacks"])
        self.bad_samples = config["bad_samples"]
        if self.local_mode:
            self.device = torch.device(config["device"] or ("cuda" if torch.cuda.is_available() else "cpu"))
        else:
            import ray.train.torch

            self.device = ray.train.torch.get_device()
            torch.set_num_threads(config["threads"])
        self.log = MetricsLog(self.run_dir) if self.rank == 0 else None

    # -- reporting ---------------------------------------------------------------------------------
    def report(self, metrics: dict[str, Any], checkpoint_dir: Path | None = None) -> str | None:
        import ray.train

        if self.log is not None:
            self.log.add(metrics)
        if checkpoint_dir is None:
            ray.train.report(metrics)
            return None
        name = ckpt.step_dir(metrics["step"])
        url = join(self.root, name)
        self.log.flush()  # metrics up to this checkpoint, before it becomes the resume point
        checkpoint = ray.train.Checkpoint.from_directory(str(checkpoint_dir))
        if self.local_mode:  # Ray Train's local mode keeps checkpoints in memory: persist them here
            ckpt.upload(checkpoint_dir, url)
            ckpt.prune(self.root, self.keep)
            ray.train.report(metrics, checkpoint=checkpoint)
        else:
            ray.train.report(metrics, checkpoint=checkpoint, checkpoint_dir_name=name,
                             checkpoint_upload_fn=partial(upload_checkpoint, root=self.root))
        return url

    def event(self, row: dict[str, Any]) -> None:
        if self.log is not None:
            self.log.add(row)
            self.log.flush()

    def flush(self) -> None:
        if self.log is not None:
            self.log.flush()

    def latest_checkpoint(self) -> str | None:
        """Ray Train's latest registered checkpoint (a restart after a failure, or a run
        restored from its storage), checked complete; else the newest complete one on storage
        when resuming."""
        import ray.train

        reported = ray.train.get_checkpoint()
        if reported is not None and not self.local_mode:
            url = with_protocol(self.run_dir, reported.path)
            if ckpt.is_complete(url):
                return url
        if reported is not None or self.resume_from:
            return ckpt.latest(self.run_dir)
        return None

    # -- parallelism and data ----------------------------------------------------------------------
    def wrap(self, module: nn.Module) -> nn.Module:
        if self.local_mode:
            return module
        if self.parallelism == "fsdp":
            return parallel.shard(module)
        import ray.train.torch

        return ray.train.torch.prepare_model(module, move_to_device=False, parallel_strategy="ddp")

    def dataset_shard(self):
        if not self.streamed:
            return None
        import ray.train

        return ray.train.get_dataset_shard("train")

    def progress(self, total: int, initial: int, desc: str, disable: bool, **_) -> Any:
        """Counted here, drawn by the caller of zoo.train (jobs.progress)."""
        if disable:
            return NoBar()
        from jobs.progress import FileBar

        return FileBar(self.run_dir, total, initial)


class NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def set_postfix(self, **kw) -> None:
        pass

    def close(self) -> None:
        pass


def upload_checkpoint(checkpoint, dir_name: str, *, root: str):
    """Ray Train's checkpoint_upload_fn: copy with fsspec, manifest last (zoo.checkpoint.upload),
    and hand Ray Train the persisted checkpoint on the run's storage filesystem."""
    import ray.train

    url = ckpt.upload(checkpoint.path, join(root, dir_name))
    fs, path = pyarrow_fs(url)
    return ray.train.Checkpoint(path=path, filesystem=fs)


def worker_entry(config: dict[str, Any]) -> dict[str, Any]:
    """``train_loop_per_worker`` of the TorchTrainer."""
    from jobs.loop import train_loop
    from zoo.specs import RunSpec

    run = RunSpec.model_validate_json(config["run_json"])
    if not config["local_mode"]:  # workers=0 runs in the caller's process: its priority is the caller's
        set_nice(run.train.nice)
    ctx = RayContext(config)
    try:
        return train_loop(run, ctx, progress=config["progress"])
    finally:
        ctx.flush()  # the metrics up to a failure too


def set_nice(level: int) -> None:
    """This worker at scheduling niceness ``level`` (train.nice). Raising is always allowed;
    lowering a level the cluster started higher (Ray's default is 15) needs CAP_SYS_NICE, so
    the worker then says so and keeps its level."""
    import os
    import warnings

    now = os.getpriority(os.PRIO_PROCESS, 0)
    if now == level:
        return
    try:
        os.setpriority(os.PRIO_PROCESS, 0, level)
    except PermissionError:
        warnings.warn(f"train.nice={level}: this Ray cluster started the worker at nice {now}, and lowering it "
                      f"needs CAP_SYS_NICE: it stays at {now} (start the cluster's raylets with "
                      f"RAY_worker_niceness={level}, or set nice >= {now})", stacklevel=2)
