"""Training options that must not change what is trained, or only as they say: micro-batch
gradient accumulation, gradient checkpointing, mixed precision; and checkpoint uploads that are
interrupted at any point never become the resume point."""

from __future__ import annotations

import pytest
import torch
from fsspec.implementations.memory import MemoryFileSystem

import zoo
from tests.conftest import tiny_overrides
from zoo import checkpoint as ckpt


def weights(run, name="model.safetensors"):
    return ckpt.Checkpoint(run.checkpoint).tensors(name)


def test_micro_batches_accumulate_to_the_full_batch(tmp_path):
    kw = tiny_overrides(steps=3, batch_size=16)
    full = zoo.train("ddpm-digits", output=str(tmp_path / "a"), progress=False, **kw)
    micro = zoo.train("ddpm-digits", output=str(tmp_path / "b"), progress=False, micro_batch_size=4, **kw)
    assert zoo.get("ddpm-digits", micro_batch_size=4, **kw).train.accumulation == 4
    a, b = weights(full), weights(micro)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=2e-5, msg=k)
    with pytest.raises(zoo.SpecError, match="micro_batch_size=5 does not divide the per-worker batch 8"):
        zoo.get("ddpm-digits", batch_size=16, workers=2, micro_batch_size=5)


def test_gradient_checkpointing_is_exact_and_mixed_precision_trains(tmp_path):
    kw = tiny_overrides(steps=2)
    plain = zoo.train("ddpm-digits", output=str(tmp_path / "a"), progress=False, **kw)
    recompute = zoo.train("ddpm-digits", output=str(tmp_path / "b"), progress=False, grad_checkpointing=True, **kw)
    a, b = weights(plain), weights(recompute)
    assert all(torch.equal(a[k], b[k]) for k in a), "recomputing activations changes nothing"
    bf16 = zoo.train("ddpm-digits", output=str(tmp_path / "c"), progress=False, precision="bf16", **kw)
    c = weights(bf16)
    assert all(torch.isfinite(v).all() for v in c.values())
    assert any(not torch.equal(a[k], c[k]) for k in a), "autocast ran the forward in bf16"
    assert bf16.metrics[-1]["loss"] == pytest.approx(plain.metrics[-1]["loss"], rel=0.05)


class Crash(Exception):
    pass


@pytest.mark.parametrize("crash_at", range(7))  # 5 files, the staged manifest, its rename
def test_an_interrupted_checkpoint_upload_is_never_the_resume_point(tmp_path, monkeypatch, crash_at):
    """The upload of step 4 dies at every point, leaving a half-written file where it dies:
    the resume point stays step 2."""
    model = {"w": torch.randn(64, 64)}
    for step in (2, 4):
        ckpt.write(tmp_path / str(step), "{}", model, model, {"state": {}, "param_groups": []}, step)
    root = f"memory://crash-{crash_at}/run"
    ckpt.upload(tmp_path / "2", f"{root}/checkpoints/step_00000002")
    calls = {"n": 0}
    real_put, real_mv = MemoryFileSystem.put_file, MemoryFileSystem.mv

    def put_file(self, lpath, rpath, **kw):
        if calls["n"] == crash_at:
            with open(lpath, "rb") as f:
                blob = f.read()
            self.pipe_file(rpath, blob[: len(blob) // 2])  # dies halfway through this file
            raise Crash(rpath)
        calls["n"] += 1
        return real_put(self, lpath, rpath, **kw)

    def mv(self, a, b, **kw):
        if calls["n"] == crash_at:
            raise Crash(b)
        calls["n"] += 1
        return real_mv(self, a, b, **kw)

    monkeypatch.setattr(MemoryFileSystem, "put_file", put_file)
    monkeypatch.setattr(MemoryFileSystem, "mv", mv)
    with pytest.raises(Crash):
        ckpt.upload(tmp_path / "4", f"{root}/checkpoints/step_00000004")
    assert ckpt.latest(root).endswith("step_00000002")
    monkeypatch.undo()
    ckpt.upload(tmp_path / "4", f"{root}/checkpoints/step_00000004")  # a retried upload completes it
    assert ckpt.latest(root).endswith("step_00000004")
    MemoryFileSystem().rm(f"/crash-{crash_at}", recursive=True)
