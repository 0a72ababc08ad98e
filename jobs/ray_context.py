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
        if self.local_mode:
            return super().progress(total=total, initial=initial, desc=desc, disable=disable, mininterval=2.0)
        return RayBar(total, initial, desc, disable)


def upload_checkpoint(checkpoint, dir_name: str, *, root: str):
    """Ray Train's checkpoint_upload_fn: copy with fsspec, manifest last (zoo.checkpoint.upload),
    and hand Ray Train the persisted checkpoint on the run's storage filesystem."""
    import ray.train

    url = ckpt.upload(checkpoint.path, join(root, dir_name))
    fs, path = pyarrow_fs(url)
    return ray.train.Checkpoint(path=path, filesystem=fs)


class RayBar:
    """tqdm in a Ray worker, drawn by the driver (ray.experimental.tqdm_ray)."""

    def __init__(self, total: int, initial: int, desc: str, disable: bool):
        self.bar, self.desc = None, desc
        if not disable:
            from ray.experimental.tqdm_ray import tqdm

            self.bar = tqdm(total=total, desc=desc, unit="step")
            self.bar.update(initial)

    def update(self, n: int = 1) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def set_postfix(self, **kw) -> None:
        if self.bar is not None:
            self.bar.set_description(self.desc + " " + " ".join(f"{k}={v}" for k, v in kw.items()))

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def worker_entry(config: dict[str, Any]) -> dict[str, Any]:
    """``train_loop_per_worker`` of the TorchTrainer."""
    from jobs.loop import train_loop
    from zoo.specs import RunSpec

    run = RunSpec.model_validate_json(config["run_json"])
    ctx = RayContext(config)
    try:
        return train_loop(run, ctx, progress=config["progress"])
    finally:
        ctx.flush()  # the metrics up to a failure too
