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


def grad_norms(run) -> list[float]:
    return [m["grad_norm"] for m in run.metrics if "grad_norm" in m]


def test_micro_batches_accumulate_to_the_full_batch(tmp_path):
    kw = tiny_overrides(steps=3, batch_size=16)
    full = zoo.train("ddpm-digits", output=str(tmp_path / "a"), progress=False, **kw)
    micro = zoo.train("ddpm-digits", output=str(tmp_path / "b"), progress=False, micro_batch_size=4, **kw)
    assert zoo.get("ddpm-digits", micro_batch_size=4, **kw).train.accumulation == 4
    a, b = weights(full), weights(micro)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=2e-5, msg=k)
    # AdamW hides a constant gradient scale from the weights; the logged pre-clip gradient norm does not
    norms = [grad_norms(r) for r in (full, micro)]
    assert len(norms[0]) == 3 and all(n > 0 for n in norms[0])
    torch.testing.assert_close(torch.tensor(norms[1]), torch.tensor(norms[0]), rtol=1e-5, atol=0)
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


def test_gradient_checkpointing_recomputes_the_blocks_and_a_backbone_without_it_is_an_error(tmp_path, monkeypatch):
    """Each block the UNet checkpoints runs twice per step (forward, and again in backward)
    with grad_checkpointing, once without; a backbone that cannot recompute is named."""
    from components.backbones import unet

    real, calls = unet.checkpoint, {"checkpointed": 0, "ran": 0}

    def counting(fn, *args, **kw):
        calls["checkpointed"] += 1

        def run(*a):
            calls["ran"] += 1
            return fn(*a)

        return real(run, *args, **kw)

    monkeypatch.setattr(unet, "checkpoint", counting)
    kw = tiny_overrides(steps=1, checkpoint_every=1)  # workers=0: the loop runs in this process
    zoo.train("ddpm-digits", output=str(tmp_path / "a"), progress=False, **kw)
    assert calls == {"checkpointed": 0, "ran": 0}
    zoo.train("ddpm-digits", output=str(tmp_path / "b"), progress=False, grad_checkpointing=True, **kw)
    net = zoo.build("ddpm-digits", **{k: v for k, v in kw.items() if "." in k}).denoiser.backbone
    blocks = sum(len(block) for block in [*net.down, net.mid, *net.up])  # what UNet._run loops over
    assert calls["checkpointed"] == blocks > 0, "every block of the one forward was checkpointed"
    assert calls["ran"] == 2 * calls["checkpointed"], "and recomputed in the backward"
    monkeypatch.delattr(unet.UNet, "set_grad_checkpointing")
    with pytest.raises(zoo.SpecError, match=r"train\.grad_checkpointing=true, but backbone 'unet' \(UNet\) cannot"):
        zoo.train("ddpm-digits", output=str(tmp_path / "c"), progress=False, grad_checkpointing=True, **kw)


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
