"""The Ray Train recipe: one TorchTrainer for every objective.

    ScalingConfig     workers x {CPU: cpus_per_worker, GPU: gpus_per_worker}; workers=0 runs the
                      loop in this process (Ray Train's local mode: no cluster, for debugging)
    TorchConfig       gloo on CPU, NCCL on GPU; DDP (prepare_model) or FSDP2 in the worker
    RunConfig         storage_path=<run dir>, storage_filesystem=<the URL's fsspec filesystem as
                      pyarrow>, name="checkpoints": checkpoints land in <run>/checkpoints/step_N
    CheckpointConfig  num_to_keep=keep_checkpoints
    FailureConfig     max_failures: a failed worker group restarts from the last complete
                      checkpoint; deterministic failures (NaN loss, bad data, corrupt
                      checkpoint: ZooErrors) stop the run at once instead of being retried
    datasets          {"train": the Ray Data pipeline of the shards} when data is a shard set,
                      split across workers in order (DataConfig preserve_order)
"""

from __future__ import annotations

import contextlib
import logging
import os
from typing import Any

from jobs import cluster
from jobs import data as data_sources
from zoo.errors import DataError, ZooError
from zoo.specs import RunSpec

HEALTH_CHECK_ENV = "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"


def fit(run: RunSpec, run_dir: str, resume_from: str | None, *, address: str | None = None,
        progress: bool = True, device: str | None = None, callbacks: list | tuple = (),
        verbose: bool = False) -> dict[str, Any]:
    """Train ``run`` into ``run_dir``; returns the last metrics. Raises the worker's ZooError
    (NonFiniteLossError, DataError, CheckpointError) as itself. Ray's own output goes to
    ``<run>/ray.log`` (``verbose``: to the terminal); ``progress`` draws one bar (jobs.progress)."""
    from jobs import progress as bars
    from jobs import ray_log

    cluster.check_address(address)
    checked = _check_shards(run) if data_sources.kind(run.train.data) == "shards" else None  # before any cluster starts
    bars.clear(run_dir)
    with ray_log.to_run_folder(run_dir, verbose) as terminal:
        watch = (bars.Watcher(run_dir, run.train.steps, f"train {run.name}", terminal) if progress
                 else contextlib.nullcontext())
        with watch:
            return _fit(run, run_dir, resume_from, checked, address=address, progress=progress, device=device,
                        callbacks=callbacks)


def _fit(run: RunSpec, run_dir: str, resume_from: str | None, checked, *, address: str | None,
         progress: bool, device: str | None, callbacks: list | tuple) -> dict[str, Any]:
    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer

    tr = run.train
    local_mode = tr.workers == 0
    streamed = data_sources.kind(tr.data) == "shards"
    datasets, counter, how = {}, None, None
    if not local_mode or streamed:
        cpus, gpus = tr.workers * tr.cpus_per_worker, tr.workers * tr.gpus_per_worker
        how = cluster.ensure(address, cpus=cpus, gpus=gpus, progress=progress)
        cluster.check_resources(cpus, gpus, how, data_cpus=1.0 if streamed else 0.0)
    if streamed:
        datasets["train"], counter = _streamed_dataset(run, *checked)

    config = {
        "run_json": run.model_dump_json(), "run_dir": run_dir, "resume_from": resume_from,
        "progress": progress, "device": device, "callbacks": list(callbacks), "local_mode": local_mode,
        "keep": tr.keep_checkpoints, "parallelism": tr.parallelism, "streamed": streamed,
        "bad_samples": counter, "threads": max(1, int(tr.cpus_per_worker)),
    }
    from jobs.loopback_torch import LoopbackTorchConfig
    from jobs.stop_on_zoo_error import StopOnZooError
    from jobs.ray_context import worker_entry
    from jobs.storage import is_local, pyarrow_fs

    if resume_from and not local_mode:
        _drop_stale_ray_record(run_dir)
    fs, path = pyarrow_fs(run_dir)
    use_gpu = tr.gpus_per_worker > 0
    resources = {"CPU": tr.cpus_per_worker, **({"GPU": tr.gpus_per_worker} if use_gpu else {})}
    os.environ.setdefault(HEALTH_CHECK_ENV, "0.5")  # the controller's poll: reports wait for it
    if local_mode:  # local mode logs every report at INFO; metrics.jsonl has them
        logging.getLogger("ray.train.v2._internal.execution.train_fn_utils").setLevel(logging.WARNING)
    trainer = trimmed(TorchTrainer, embedded=how == "embedded", datasets=bool(datasets))(
        worker_entry,
        train_loop_config=config,
        torch_config=(LoopbackTorchConfig if how == "embedded" else TorchConfig)(backend="nccl" if use_gpu else "gloo"),
        scaling_config=ray.train.ScalingConfig(num_workers=tr.workers, use_gpu=use_gpu, resources_per_worker=resources),
        run_config=ray.train.RunConfig(
            name="checkpoints",
            storage_path=path,
            storage_filesystem=None if is_local(run_dir) else fs,
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=tr.keep_checkpoints),
            failure_config=ray.train.FailureConfig(max_failures=tr.max_failures),
            callbacks=[StopOnZooError()],
            logging_config=ray.train.LoggingConfig(log_level="WARNING"),
        ),
        datasets=datasets,
        dataset_config=_data_config(),
    )
    try:
        result = trainer.fit()
    except Exception as e:
        found = zoo_error(e)
        if found is not None:
            raise found from None
        raise
    finally:
        if counter is not None:
            _bad_samples[run_dir] = ray.get(counter.summary.remote())
            ray.kill(counter)
    return result.metrics or {}


_bad_samples: dict[str, dict] = {}


def bad_samples(run_dir: str) -> dict | None:
    """The skipped-sample summary of the last streamed run into run_dir (on_bad_sample='skip')."""
    return _bad_samples.get(run_dir)


def _check_shards(run: RunSpec):
    from jobs import shards

    tr = run.train
    index = shards.read_index(tr.data)
    check_matches(run, index, tr.data)
    good, bad = shards.check_shards(tr.data, index, tr.on_bad_sample)
    if not good:
        raise DataError(f"data={tr.data!r}: no readable shard")
    return index, good, bad


def _streamed_dataset(run: RunSpec, index, good: list[str], bad: dict[str, int]):
    from jobs import shards

    tr = run.train
    counter = None
    if tr.on_bad_sample == "skip":
        counter = shards.bad_sample_counter()
        counter.add_shards.remote(bad)
    columns = ["image", "pixels", "label", "caption", "latent", "noise"]
    return shards.dataset(tr.data, index, good, tr.on_bad_sample, counter, columns, progress=False), counter


def check_matches(run: RunSpec, index, url: str) -> None:
    """The shards hold what the model trains on: images of its size and channels, or latents of
    its latent shape; labels when it is class-conditional."""
    model = run.model
    if "latent" in index.columns:
        want = list(model.autoencoder.latent_shape(model.image.size))
        want = [want[0], want[1], want[1]]
        if index.latent_shape != want:
            raise DataError(f"data={url!r}: latents of shape {index.latent_shape}, {run.name} needs {want}")
    elif "image" in index.columns or "pixels" in index.columns:
        if (index.image_size, index.channels) != (model.image.size, model.image.channels):
            raise DataError(f"data={url!r}: {index.channels}-channel {index.image_size}x{index.image_size} images, "
                            f"{run.name} needs {model.image.channels}-channel {model.image.size}x{model.image.size} "
                            "(pack them with --size / --channels)")
    else:
        raise DataError(f"data={url!r}: the shards have neither an image nor a latent column")
    if getattr(model.conditioner, "num_classes", None) and "label" not in index.columns:
        raise DataError(f"data={url!r}: {run.name} is class-conditional but the shards have no labels")


RAY_RECORD = "checkpoint_manager_snapshot.json"


def _drop_stale_ray_record(run_dir: str) -> None:
    """Ray Train restores a run from its record of reported checkpoints and refuses to start
    when one of them is gone. The checkpoints on storage are the truth (each verifies itself):
    when the record names one that is missing or incomplete, drop the record, and the run
    resumes from the newest complete checkpoint there is."""
    import json
    import warnings

    import fsspec

    from jobs.storage import join
    from zoo import checkpoint as ckpt

    url = join(run_dir, "checkpoints", RAY_RECORD)
    fs, path = fsspec.core.url_to_fs(url)
    if not fs.exists(path):
        return
    try:
        with fs.open(path, "r") as f:
            record = json.load(f)
        names = {r["checkpoint_dir_name"] for r in record.get("checkpoint_results", [])}
        if record.get("latest_checkpoint_result"):
            names.add(record["latest_checkpoint_result"]["checkpoint_dir_name"])
    except (ValueError, KeyError, TypeError):
        return  # not a record this code understands: leave it to Ray Train
    gone = sorted(n for n in names if not ckpt.is_complete(join(run_dir, "checkpoints", n)))
    if gone:
        warnings.warn(f"{run_dir}: Ray Train's record names checkpoints that are missing or incomplete "
                      f"({', '.join(gone)}); resuming from the newest complete checkpoint on storage", stacklevel=3)
        fs.rm(path)


def trimmed(trainer_cls, *, embedded: bool, datasets: bool):
    """``trainer_cls`` without the Ray Train parts a run has no use for. Each is an actor, i.e.
    one more Python process per run (about 1.5 s of CPU each, and on 2 cores they start while
    the workers do; measured in bench/ray_train_overhead.py):

    - the placement-group cleaner, on the embedded cluster: it watches the controller through
      the State API, which a cluster without a dashboard does not have, and the cluster ends
      with this process, placement groups included;
    - the autoscaling coordinator, on the embedded cluster: the controller's scaling policy
      registers the workers' resources with a detached actor that tells Ray's autoscaler what
      to add, and a one-machine cluster has no autoscaler (the actor imports Ray Data and torch,
      and the controller waits up to 5 s for its first answer while it starts);
    - the dataset manager, for a run without Ray Data datasets (it is started for none too).
    """
    from ray.train.v2._internal.callbacks import DatasetsCallback
    from ray.train.v2._internal.callbacks.placement_group_callback import PlacementGroupCleanerCallback

    drop = ((PlacementGroupCleanerCallback,) if embedded else ()) + (() if datasets else (DatasetsCallback,))
    if not drop:  # a joined cluster's run with datasets: as it is
        return trainer_cls

    class Trimmed(trainer_cls):
        def _create_default_callbacks(self):
            return [c for c in super()._create_default_callbacks() if not isinstance(c, drop)]

        def _initialize_and_run_controller(self, **kwargs):
            if embedded:
                kwargs["scaling_policy"] = _fixed_without_autoscaler(kwargs["scaling_policy"])
            return super()._initialize_and_run_controller(**kwargs)

    Trimmed.__name__ = Trimmed.__qualname__ = trainer_cls.__name__
    return Trimmed


def _fixed_without_autoscaler(policy):
    """Ray Train's fixed-size scaling policy minus its requests to the autoscaling coordinator
    (see ``trimmed``); any other policy (elastic) as it is."""
    from ray.train.v2._internal.execution.scaling_policy.fixed import FixedScalingPolicy

    if type(policy) is not FixedScalingPolicy:
        return policy

    class NoAutoscaler(FixedScalingPolicy):
        def after_controller_start(self, train_run_context) -> None:
            pass

        def _maybe_send_resource_request(self) -> None:
            pass

        def _cancel_resource_request(self) -> None:
            pass

    return NoAutoscaler(policy.scaling_config)


def _data_config():
    import ray.train
    from ray.data import ExecutionOptions

    # in order: the split across workers, hence every worker's stream, is the same on every run
    return ray.train.DataConfig(execution_options=ExecutionOptions(preserve_order=True))


def zoo_error(e: BaseException) -> ZooError | None:
    """The ZooError a worker raised, from Ray Train's TrainingFailedError."""
    seen = set()
    stack = [e]
    while stack:
        cur = stack.pop()
        if cur is None or id(cur) in seen:
            continue
        seen.add(id(cur))
        if isinstance(cur, ZooError):
            return cur
        stack.extend(getattr(cur, "worker_failures", {}).values())
        stack.extend([getattr(cur, "controller_failure", None), getattr(cur, "cause", None), cur.__cause__])
        stack.extend(a for a in getattr(cur, "args", ()) if isinstance(a, BaseException))
    return None
