"""The per-worker loop: checkpoints that verify themselves, exact resume, worker-count
independence of the data and noise, NaN stops, and per-seed reproducible sampling."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import zoo
from components.random import RandomSource
from jobs.data import open_data
from tests.conftest import tiny_overrides
from zoo import checkpoint as ckpt


def weights(url: str, name: str = "model.safetensors") -> dict[str, torch.Tensor]:
    return ckpt.Checkpoint(ckpt.resolve(url)).tensors(name)


def test_train_writes_complete_checkpoints_and_metrics(tmp_path):
    run = zoo.train("ddpm-digits", output=str(tmp_path), progress=False, **tiny_overrides(steps=6, keep_checkpoints=2))
    steps = sorted(p.name for p in (Path(run.dir) / "checkpoints").iterdir())
    assert steps == ["step_00000004", "step_00000006"], "keep_checkpoints=2 keeps the newest two"
    assert run.checkpoint.endswith("step_00000006")
    c = ckpt.Checkpoint(run.checkpoint)
    assert c.step == 6 and set(c.files) == set(ckpt.FILES)
    assert zoo.RunSpec.model_validate_json(c.spec_json()) == run.spec
    rows = [json.loads(line) for line in (Path(run.dir) / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6] and all("loss" in r and "img_per_s" in r for r in rows)


def test_resume_is_bit_identical_to_an_uninterrupted_run(tmp_path):
    straight = zoo.train("ddpm-digits", output=str(tmp_path / "a"), progress=False, **tiny_overrides(steps=6))
    first = zoo.train("ddpm-digits", output=str(tmp_path / "b"), progress=False, **tiny_overrides(steps=4))
    resumed = zoo.train("ddpm-digits", output=str(tmp_path / "b"), progress=False, resume=first.dir, **tiny_overrides(steps=6))
    assert resumed.dir == first.dir
    for name in ("model.safetensors", "ema.safetensors"):
        a, b = weights(straight.checkpoint, name), weights(resumed.checkpoint, name)
        assert all(torch.equal(a[k], b[k]) for k in a), name


def test_second_fresh_run_does_not_overwrite_and_resume_true_finds_it(tmp_path):
    a = zoo.train("ddpm-digits", output=str(tmp_path), progress=False, **tiny_overrides(steps=2))
    b = zoo.train("ddpm-digits", output=str(tmp_path), progress=False, **tiny_overrides(steps=2))
    assert b.dir == a.dir + "-2"
    c = zoo.train("ddpm-digits", output=str(tmp_path), progress=False, resume=True, **tiny_overrides(steps=2))
    assert c.dir == b.dir


def test_incomplete_checkpoint_is_never_the_resume_point(tmp_path):
    run = zoo.train("ddpm-digits", output=str(tmp_path), progress=False, **tiny_overrides(steps=4))
    # a later checkpoint whose write was interrupted: files but no manifest
    broken = Path(run.dir) / "checkpoints" / "step_00000006"
    broken.mkdir()
    (broken / "model.safetensors").write_bytes(b"partial")
    assert ckpt.latest(run.dir).endswith("step_00000004")


def test_corrupt_checkpoint_file_is_named(tmp_path):
    run = zoo.train("ddpm-digits", output=str(tmp_path), progress=False, **tiny_overrides(steps=2))
    ema = Path(run.checkpoint) / "ema.safetensors"
    blob = bytearray(ema.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    ema.write_bytes(bytes(blob))
    with pytest.raises(zoo.CheckpointError, match=r"ema\.safetensors: corrupt"):
        zoo.load(run.checkpoint)
    ema.write_bytes(bytes(blob[:100]))
    with pytest.raises(zoo.CheckpointError, match=r"ema\.safetensors"):
        zoo.load(run.checkpoint)
    (Path(run.checkpoint) / "manifest.json").unlink()
    with pytest.raises(zoo.CheckpointError, match="no complete checkpoint"):
        zoo.load(run.checkpoint)
    with pytest.raises(zoo.CheckpointError, match="does not exist"):
        zoo.load(str(tmp_path / "nothing-here"))


def test_weights_that_do_not_fit_are_named(tmp_path):
    run = zoo.train("ddpm-digits", output=str(tmp_path), progress=False, **tiny_overrides(steps=2))
    path = str(Path(run.checkpoint) / "ema.safetensors")
    with pytest.raises(zoo.CheckpointError, match=r"ema\.safetensors: weights do not fit ddpm-digits"):
        zoo.load("ddpm-digits", weights=path)  # the catalog's full-size UNet, not the tiny one


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    from components.objectives import dsm

    real = dsm.Dsm.loss

    def poisoned(self, denoiser, batch, rng, step):
        loss, m = real(self, denoiser, batch, rng, step)
        return (loss * float("nan") if step == 2 else loss), m

    monkeypatch.setattr(dsm.Dsm, "loss", poisoned)
    with pytest.raises(zoo.NonFiniteLossError, match=r"in step 3 \(.*step_00000002 is the state before it\)"):
        zoo.train("ddpm-digits", output=str(tmp_path), progress=False, **tiny_overrides(steps=4))
    run_dir = next(tmp_path.iterdir())
    assert ckpt.latest(str(run_dir)).endswith("step_00000002")
    good = weights(str(run_dir))
    assert all(torch.isfinite(v).all() for v in good.values())


def test_data_and_noise_do_not_depend_on_worker_count():
    """Worker r of W gets rows [r B/W, (r+1) B/W) of the same global batch and noise."""
    spec = zoo.get("ddpm-digits", batch_size=8).train
    one = open_data(spec, 0, 1).batch(5)
    halves = [open_data(spec, r, 2).batch(5) for r in range(2)]
    torch.testing.assert_close(torch.cat([h["image"] for h in halves]), one["image"])
    full = RandomSource.for_step(0, 5, 8, slice(0, 8)).randn(3)
    parts = [RandomSource.for_step(0, 5, 8, slice(4 * r, 4 * r + 4)).randn(3) for r in range(2)]
    torch.testing.assert_close(torch.cat(parts), full)


def test_sampling_is_reproducible_per_seed(tmp_path):
    run = zoo.train("ddpm-digits", output=str(tmp_path), progress=False, **tiny_overrides(steps=2))
    model = zoo.load(run.checkpoint)
    for solver in ("ddim", "ddpm"):
        a = model.sample(4, steps=5, solver=solver, seed=11)
        b = model.sample(4, steps=5, solver=solver, seed=11)
        c = model.sample(4, steps=5, solver=solver, seed=12)
        assert torch.equal(a, b) and not torch.equal(a, c)
    # one seed per sample: sample i depends only on its own seed
    per = model.sample(3, steps=5, solver="ddpm", seed=[4, 5, 6])
    solo = model.sample(1, steps=5, solver="ddpm", seed=[5])
    torch.testing.assert_close(per[1:2], solo, rtol=1e-5, atol=1e-5)
    with pytest.raises(zoo.SpecError, match="'ddpm', 'ddim'"):
        model.sample(2, solver="euler-ish")


def test_tensor_file_source_passes_every_column(tmp_path):
    from safetensors.torch import save_file

    from zoo.data import digits

    x, y = digits.load("train")
    path = tmp_path / "pairs.safetensors"
    save_file({"image": x[:64].contiguous(), "label": y[:64].contiguous(), "noise": torch.randn(64, 1, 16, 16)}, str(path))
    spec = zoo.get("ddpm-digits", data=str(path), batch_size=16).train
    batch = open_data(spec).batch(3)
    assert set(batch) == {"image", "label", "noise"} and batch["noise"].shape == (16, 1, 16, 16)
    run = zoo.train("ddpm-digits", output=str(tmp_path / "runs"), progress=False, **tiny_overrides(data=str(path)))
    assert run.checkpoint is not None
    with pytest.raises(zoo.DataError, match="missing.safetensors"):
        open_data(zoo.get("ddpm-digits", data=str(tmp_path / "missing.safetensors")).train)


def test_the_shipped_digits_are_scikit_learns_without_importing_it():
    """zoo.data.digits reads the file scikit-learn ships (no scikit-learn import in a fresh
    worker): the same images and labels as ``load_digits``, and the fixed split covers them once."""
    import numpy as np
    from sklearn.datasets import load_digits

    from zoo.data import digits

    images, labels = digits._raw()
    ref = load_digits()
    assert np.array_equal(images, ref.images) and np.array_equal(labels, ref.target)
    (train_x, train_y), (held_x, held_y) = digits.load("train"), digits.load("heldout")
    assert len(train_y) + len(held_y) == len(ref.target) and len(held_y) == digits.HELD_OUT
    assert train_x.shape == (len(train_y), 1, 16, 16) and held_x.shape == (digits.HELD_OUT, 1, 16, 16)
    assert sorted(torch.cat([train_y, held_y]).tolist()) == sorted(ref.target.tolist())
