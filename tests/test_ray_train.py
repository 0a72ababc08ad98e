"""zoo.train on real Ray Train workers of the session's local cluster: the worker count does not
change what is trained, a killed worker resumes bit-identically from the last complete
checkpoint, and deterministic failures (NaN loss) stop at once keeping the last good checkpoint."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import cloudpickle
import pytest
import torch

import zoo
from jobs.callbacks import Callback
from jobs.pack import pack
from tests.conftest import tiny_overrides
from zoo import checkpoint as ckpt

pytestmark = pytest.mark.slow
cloudpickle.register_pickle_by_value(sys.modules[__name__])  # callbacks defined here reach the workers

# 8 steps, checkpoints after steps 3, 6 and 8
RUN = tiny_overrides(steps=8, checkpoint_every=3, keep_checkpoints=3, batch_size=16)


def tensors(url: str, name: str) -> dict[str, torch.Tensor]:
    return ckpt.Checkpoint(ckpt.resolve(url)).tensors(name)


@pytest.fixture(scope="module")
def references(tmp_path_factory, request):
    """The uninterrupted runs on 1 worker, 2 DDP and 2 FSDP workers, trained on the session's
    cluster once per spec and code (tests/train_cache.py: the spec key holds workers and
    parallelism, the code hash everything a run imports)."""
    from tests.train_cache import cached_train

    def train(**kw):
        return cached_train(tmp_path_factory, "ddpm-digits", before=lambda: request.getfixturevalue("ray_cluster"),
                            **{**RUN, **kw})

    return train(workers=1), train(workers=2), train(workers=2, parallelism="fsdp")


@pytest.mark.parametrize("other", ["ddp", "fsdp"])
def test_two_workers_with_half_batches_train_what_one_worker_trains(references, other):
    """DDP (replicated weights, all-reduced gradients) and FSDP (sharded weights, checkpoints
    gathered to full tensors) on 2 workers x B/2 rows match 1 worker x B rows."""
    one, ddp, fsdp = references
    two = ddp if other == "ddp" else fsdp
    assert one.checkpoint.endswith("step_00000008") and two.checkpoint.endswith("step_00000008")
    init = seeded_init(one.spec)
    for name in ("model.safetensors", "ema.safetensors"):
        a, b = tensors(one.checkpoint, name), tensors(two.checkpoint, name)
        assert a.keys() == init.keys(), name
        moved = max((a[k] - init[k]).abs().max().item() for k in a)
        # 8 AdamW steps in the lr warmup (lr <= 1e-3 * 8/50) move a weight by 1e-4 .. 5e-3: more
        # would mean another start than the loop's seeded init, less that nothing trained
        assert 1e-4 < moved < 5e-3, f"{name} moved at most {moved:.2e} from the loop's initial weights"
        for k in a:
            torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=2e-5, msg=f"{name}:{k}")
    a, b = tensors(one.checkpoint, "optimizer.safetensors"), tensors(two.checkpoint, "optimizer.safetensors")
    assert a.keys() == b.keys() and all(a[k].shape == b[k].shape for k in a), "full optimizer state"
    losses = lambda r: [m["loss"] for m in r.metrics if "loss" in m]  # noqa: E731
    torch.testing.assert_close(torch.tensor(losses(one)), torch.tensor(losses(two)), rtol=1e-4, atol=1e-5)
    # AdamW hides a constant gradient scale from the weights (a sum over workers instead of a mean
    # would pass above); the pre-clip gradient norm of the global batch does not
    norms = lambda r: [m["grad_norm"] for m in r.metrics if "grad_norm" in m]  # noqa: E731
    assert len(norms(one)) == 8 and all(n > 0 for n in norms(one))
    torch.testing.assert_close(torch.tensor(norms(two)), torch.tensor(norms(one)), rtol=1e-5, atol=0)


def seeded_init(spec) -> dict[str, torch.Tensor]:
    """The weights the training loop starts from: its init seed (jobs/loop.py), then the model."""
    from components.random import derive_seed
    from zoo.model import Model

    with torch.random.fork_rng():
        torch.manual_seed(derive_seed(spec.train.seed, "init"))
        model = Model(spec.model, spec.name)
    return {k: v.detach().clone() for k, v in model.denoiser.state_dict().items()}


class KillOnce(Callback):
    """SIGKILL this worker process after a step, once (the marker file survives the restart)."""

    def __init__(self, step: int, rank: int, marker: str):
        self.step, self.rank, self.marker = step, rank, marker

    def on_step_end(self, step, rank, metrics):
        if step == self.step and rank == self.rank and not os.path.exists(self.marker):
            open(self.marker, "w").close()
            os.kill(os.getpid(), signal.SIGKILL)


def test_killed_worker_resumes_from_the_last_checkpoint_bit_identically(references, ray_cluster, tmp_path):
    _, two, _ = references
    marker = tmp_path / "killed"
    run = zoo.train("ddpm-digits", output=str(tmp_path), progress=False, max_failures=1,
                    callbacks=[KillOnce(step=5, rank=1, marker=str(marker))], **{**RUN, "workers": 2})
    assert marker.exists(), "the worker was killed"
    resumed = [m for m in run.metrics if m.get("event") == "resumed"]
    assert [m["step"] for m in resumed] == [3], "restarted from the checkpoint of step 3"
    for name in ("model.safetensors", "ema.safetensors", "optimizer.safetensors"):
        a, b = tensors(two.checkpoint, name), tensors(run.checkpoint, name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    assert [m["step"] for m in run.metrics if "loss" in m] == list(range(1, 9))


def test_nan_loss_stops_without_retries_and_keeps_the_last_good_checkpoint(ray_cluster, tmp_path):
    from safetensors.torch import save_file

    from jobs.data import open_data
    from zoo.data import digits

    x = digits.load("train")[0][:64].clone()
    spec = zoo.get("ddpm-digits", **{**RUN, "data": "builtin:digits"}).train
    x[:, 0, 0, 0] = torch.arange(64) / 100  # tag each sample to find where step 2 takes its rows
    data = tmp_path / "tagged.safetensors"
    save_file({"image": x.contiguous()}, str(data))
    at_step_2 = open_data(spec.model_copy(update={"data": str(data)})).batch(2)["image"][:, 0, 0, 0]
    x[int(round(at_step_2[0].item() * 100))] = float("nan")  # one sample of step 2 is NaN
    save_file({"image": x.contiguous()}, str(data))

    # batch(2) is the third step: counted as checkpoints are, step 3, after step_00000002
    with pytest.raises(zoo.NonFiniteLossError, match=r"in step 3 \(.*step_00000002 is the state before it"):
        zoo.train("ddpm-digits", output=str(tmp_path / "runs"), progress=False, max_failures=2,
                  **{**RUN, "data": str(data), "workers": 1, "checkpoint_every": 1})
    run_dir = next((tmp_path / "runs").iterdir())
    assert ckpt.latest(str(run_dir)).endswith("step_00000002")
    assert all(torch.isfinite(v).all() for v in tensors(str(run_dir), "model.safetensors").values())
    rows = (run_dir / "metrics.jsonl").read_text()
    assert "resumed" not in rows, "a NaN loss repeats on every retry: the run must stop, not restart"


def test_runs_the_cluster_cannot_place_are_refused(ray_cluster, tmp_path):
    with pytest.raises(zoo.SpecError, match=r"asks for 64 CPUs .* the Ray cluster has 4 CPUs"):
        zoo.train("ddpm-digits", output=str(tmp_path), progress=False, **{**RUN, "workers": 64, "batch_size": 64})
    shards = tmp_path / "shards"
    pack("builtin:digits", str(shards), progress=False)
    with pytest.raises(zoo.SpecError, match=r"asks for 4 CPUs \+ 1 for Ray Data .* has 4 CPUs"):
        zoo.train("ddpm-digits", output=str(tmp_path), progress=False,
                  **{**RUN, "workers": 2, "cpus_per_worker": 2.0, "data": str(shards)})
    with pytest.raises(zoo.SpecError, match="job submission .* address: use zoo.submit"):
        zoo.train("ddpm-digits", output=str(tmp_path), progress=False, address="http://127.0.0.1:8265", **RUN)


def test_relative_paths_are_this_process_paths(ray_cluster, tmp_path, monkeypatch):
    """Ray workers run in directories of their own: a relative output (as `make demo` passes),
    data or weights path means this process's working directory."""
    monkeypatch.chdir(tmp_path)
    # the weights come from a run in this process (workers=0); one Ray run then takes both paths
    first = zoo.train("ddpm-digits", output="runs", progress=False, **tiny_overrides(steps=2))
    rel = os.path.relpath(first.checkpoint, tmp_path)
    tuned = zoo.train("ddpm-digits", output="runs", weights=rel, progress=False, **{**tiny_overrides(steps=2), "workers": 1})
    assert Path(tuned.dir).is_absolute() and Path(tuned.dir).parent == tmp_path / "runs"
    assert ckpt.latest(tuned.dir) is not None
    assert tuned.spec.model.weights == first.checkpoint and tuned.checkpoint is not None
