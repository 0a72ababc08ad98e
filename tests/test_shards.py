"""Sharded data: `zoo data pack` from the digits, a folder of images and CIFAR-10 (both
versions), lossless; precomputed latents; streaming through Ray Data with exact resume; bad
shards and samples named or skipped and counted; training from shards on the S3 API server
with checkpoints written there."""

from __future__ import annotations

import io
import json
import os
import pickle
import posixpath
import shutil
from pathlib import Path

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

import zoo
from jobs.pack import iter_rows, pack
from jobs.shards import decode_png, read_index
from tests.conftest import assert_bit_identical, tiny_overrides
from zoo import checkpoint as ckpt
from zoo.cli import app
from zoo.data import digits


def pixels(url: str) -> list[np.ndarray]:
    return [decode_png(r["image"], read_index(url).image_size, read_index(url).channels) for _, r in iter_rows(url, ["image"])]


def test_pack_digits_is_lossless_shuffled_and_indexed(tmp_path):
    dest = str(tmp_path / "digits")
    r = CliRunner().invoke(app, ["data", "pack", "builtin:digits", dest, "--shard-size", "500", "--no-progress"])
    assert r.exit_code == 0, r.output
    index = read_index(dest)
    assert index.rows == 1437 and [s.rows for s in index.shards] == [500, 500, 437]
    assert (index.image_size, index.channels, index.columns) == (16, 1, ["key", "image", "label"])
    rows = [row for _, row in iter_rows(dest, ["key", "image", "label"])]
    images, labels = digits.load("train")
    expect = ((images[:, 0] + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).numpy()
    got = {row["key"]: (decode_png(row["image"], 16, 1)[0], row["label"]) for row in rows}
    for i in (0, 17, 1436):
        img, label = got[f"digits-train-{i:05d}"]
        assert np.array_equal(img, expect[i]) and label == labels[i].item()
    keys = [row["key"] for row in rows]
    assert keys != sorted(keys), "samples are shuffled at pack time"
    r = CliRunner().invoke(app, ["data", "pack", "builtin:digits", dest, "--no-progress"])
    assert r.exit_code == 2 and "already holds a shard set" in r.stderr


def test_pack_shard_size_in_bytes(tmp_path):
    index = pack("builtin:digits", str(tmp_path / "d"), shard_size="20KB", progress=False)
    assert len(index.shards) > 3 and all(s.bytes < 40 * 1024 for s in index.shards)
    assert sum(s.rows for s in index.shards) == 1437


def test_pack_image_folder_with_classes_captions_and_resize(tmp_path):
    rng = np.random.default_rng(0)
    src = tmp_path / "afhq" / "train"
    originals = {}
    for cls in ("cat", "dog", "wild"):
        (src / cls).mkdir(parents=True)
        for i in range(3):
            arr = rng.integers(0, 256, (24, 20, 3), dtype=np.uint8)  # not square: needs --size
            Image.fromarray(arr).save(src / cls / f"{i}.png")
            originals[f"{cls}/{i}.png"] = arr
    (src / "dog" / "1.txt").write_text("a good dog\n")
    with pytest.raises(zoo.DataError, match="not square; pass size="):
        pack(str(src), str(tmp_path / "bad"), progress=False)
    index = pack(str(src), str(tmp_path / "out"), size=8, shard_size=4, progress=False)
    assert index.classes == ["cat", "dog", "wild"] and index.rows == 9 and index.image_size == 8
    assert index.columns == ["key", "image", "label", "caption"]
    rows = {row["key"]: row for _, row in iter_rows(str(tmp_path / "out"), index.columns)}
    assert rows["dog/1.png"]["label"] == 1 and rows["dog/1.png"]["caption"] == "a good dog"
    assert rows["wild/2.png"]["label"] == 2 and rows["cat/0.png"]["caption"] == ""
    crop = Image.fromarray(originals["cat/0.png"]).crop((0, 2, 20, 22)).resize((8, 8), Image.Resampling.BICUBIC)
    assert np.array_equal(decode_png(rows["cat/0.png"]["image"], 8, 3), np.asarray(crop).transpose(2, 0, 1))


def _cifar(n: int, seed: int) -> tuple[np.ndarray, list[int]]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 3072), dtype=np.uint8), [int(v) for v in rng.integers(0, 10, n)]


def test_pack_cifar10_binary_and_python_versions(tmp_path):
    data, labels = _cifar(12, 0)
    binary = tmp_path / "cifar-10-batches-bin"
    binary.mkdir()
    (binary / "data_batch_1.bin").write_bytes(np.concatenate([np.array(labels, np.uint8)[:, None], data], 1).tobytes())
    (binary / "test_batch.bin").write_bytes(np.concatenate([np.zeros((2, 1), np.uint8), data[:2]], 1).tobytes())
    python = tmp_path / "cifar-10-batches-py"
    python.mkdir()
    (python / "data_batch_1").write_bytes(pickle.dumps({b"data": data, b"labels": labels, b"batch_label": b"x"}))
    for src in (binary, python):
        out = str(tmp_path / f"{src.name}-shards")
        index = pack(str(src), out, progress=False)
        assert index.rows == 12 and index.classes[0] == "airplane" and (index.image_size, index.channels) == (32, 3)
        rows = {row["key"]: row for _, row in iter_rows(out, ["key", "image", "label"])}
        name = "data_batch_1.bin" if src is binary else "data_batch_1"
        for i in (0, 11):
            row = rows[f"{name}:{i}"]
            assert row["label"] == labels[i]
            assert np.array_equal(decode_png(row["image"], 32, 3), data[i].reshape(3, 32, 32))
    assert pack(str(binary), str(tmp_path / "test"), split="test", progress=False).rows == 2

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))  # not print: Ray swaps builtins.print for its own

    evil = tmp_path / "evil"
    evil.mkdir()
    (evil / "data_batch_1").write_bytes(pickle.dumps({b"data": Evil(), b"labels": []}))
    with pytest.raises(zoo.DataError, match=r"refusing to unpickle (posix|os)\.system"):
        pack(str(evil), str(tmp_path / "never"), progress=False)


@pytest.mark.slow  # a Ray cluster streams the shards
def test_encode_writes_latents_the_loop_trains_on(tmp_path, ray_cluster):
    src, dest = str(tmp_path / "img"), str(tmp_path / "lat")
    pack("builtin:digits", src, shard_size=700, progress=False)
    r = CliRunner().invoke(app, ["data", "encode", src, dest, "--model", "ddpm-digits", "--no-progress"])
    assert r.exit_code == 0, r.output
    index = read_index(dest)
    assert index.columns == ["key", "latent", "label"] and index.latent_shape == [1, 16, 16] and index.rows == 1437
    images = {row["key"]: row["image"] for _, row in iter_rows(src, ["key", "image"])}
    for _, row in list(iter_rows(dest, ["key", "latent"]))[:5]:  # identity autoencoder: latent = image in [-1, 1]
        lat = np.frombuffer(row["latent"], "<f2").reshape(1, 16, 16).astype(np.float32)
        img = decode_png(images[row["key"]], 16, 1).astype(np.float32) / 127.5 - 1
        np.testing.assert_allclose(lat, img, atol=1e-3)
    run = zoo.train("ddpm-digits", output=str(tmp_path / "runs"), progress=False, **tiny_overrides(data=dest, steps=2))
    assert run.checkpoint is not None
    with pytest.raises(zoo.DataError, match=r"latents of shape \[1, 16, 16\], ddpm-digits needs \[3, 16, 16\]"):
        zoo.train("ddpm-digits", output=str(tmp_path / "runs"), progress=False,
                  **tiny_overrides(data=dest, **{"image.channels": 3, "autoencoder.channels": 3,
                                                 "backbone.in_channels": 3, "backbone.out_channels": 3}))


@pytest.fixture(scope="module")
def small_shards(tmp_path_factory):
    """48 digits in 4 shards: three batches of 16 per epoch, so a few steps cross epochs."""
    root = tmp_path_factory.mktemp("small")
    src = root / "folder"
    src.mkdir()
    images, _ = digits.load("train")
    for i in range(48):
        Image.fromarray(((images[i, 0] + 1) * 127.5).round().byte().numpy()).save(src / f"{i:02d}.png")
    return pack(str(src), str(root / "shards"), shard_size=15, progress=False), str(root / "shards")


@pytest.mark.slow  # a Ray cluster streams the shards
def test_streamed_resume_continues_the_exact_stream(small_shards, tmp_path, ray_cluster):
    _, url = small_shards
    kw = tiny_overrides(data=url, steps=5, checkpoint_every=2, keep_checkpoints=3, hflip=True, shuffle_buffer=8)
    straight = zoo.train("ddpm-digits", output=str(tmp_path / "a"), progress=False, **kw)
    assert [m["epoch"] for m in straight.metrics] == [0, 0, 0, 1, 1]
    cut = tmp_path / "b" / Path(straight.dir).name  # the run as an interruption after step 4 left it
    shutil.copytree(straight.dir, cut)
    shutil.rmtree(cut / "checkpoints" / "step_00000005")
    state = ckpt.Checkpoint(ckpt.latest(str(cut))).state()
    assert state["step"] == 4 and state["data"] == {"kind": "stream", "epoch": 1, "batch": 1, "world_size": 1}
    resumed = zoo.train("ddpm-digits", output=str(tmp_path / "b"), progress=False, resume=str(cut), **kw)
    assert [m["step"] for m in resumed.metrics if m.get("event") == "resumed"] == [4]
    assert_bit_identical(straight.checkpoint, resumed.checkpoint)


def _rewrite_shard(url: str, shard: str, fn) -> None:
    fs, root = fsspec.core.url_to_fs(url)
    path = posixpath.join(root, shard)
    with fs.open(path, "rb") as f:
        blob = f.read()
    with fs.open(path, "wb") as f:
        f.write(fn(blob))


def _garble_sample(blob: bytes, row: int = 0) -> bytes:
    table = pq.read_table(io.BytesIO(blob))
    images = table.column("image").to_pylist()
    images[row] = b"\x89PNG\r\n\x1a\n" + b"garbage" * 10
    table = table.set_column(table.schema.get_field_index("image"), "image", pa.array(images, pa.binary()))
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


@pytest.mark.slow  # a Ray cluster streams the shards
def test_bad_samples_and_truncated_shards_are_named(small_shards, tmp_path, ray_cluster):
    index, url = small_shards
    fs = fsspec.filesystem("file")
    bad = str(tmp_path / "bad")
    fs.cp(url, bad, recursive=True)
    _rewrite_shard(bad, "shard-00001.parquet", _garble_sample)
    key = next(row["key"] for name, row in iter_rows(bad, ["key"]) if name == "shard-00001.parquet")
    with pytest.raises(zoo.DataError, match=rf"shard .*shard-00001\.parquet: sample '{key}' does not decode"):
        zoo.train("ddpm-digits", output=str(tmp_path / "runs"), progress=False, **tiny_overrides(data=bad, steps=4))
    _rewrite_shard(bad, "shard-00002.parquet", lambda b: b[: len(b) // 2])
    with pytest.raises(zoo.DataError, match=r"shard .*shard-00002\.parquet: unreadable Parquet"):
        zoo.train("ddpm-digits", output=str(tmp_path / "runs"), progress=False, **tiny_overrides(data=bad, steps=4))


@pytest.mark.slow  # a Ray cluster streams the shards
def test_train_streams_shards_from_s3_skips_bad_samples_and_checkpoints_to_s3(s3_server, ray_cluster, tmp_path):
    """Two Ray Train workers read Parquet shards from the S3 API server on 127.0.0.1 through
    Ray Data and s3fs; one shard is truncated and one sample garbled (skipped and counted);
    checkpoints and metrics are written to the same server."""
    s3 = fsspec.filesystem("s3")
    s3.mkdir("zoo-test")
    url = "s3://zoo-test/digits"
    index = pack("builtin:digits", url, shard_size=250, progress=False)
    _rewrite_shard(url, "shard-00001.parquet", _garble_sample)
    _rewrite_shard(url, "shard-00003.parquet", lambda b: b[:100])
    run = zoo.train("ddpm-digits", progress=False, output="s3://zoo-test/runs",
                    **tiny_overrides(data=url, workers=2, steps=4, on_bad_sample="skip"))
    assert run.dir.startswith("s3://zoo-test/runs/ddpm-digits-")
    assert run.checkpoint == f"{run.dir}/checkpoints/step_00000004" and ckpt.is_complete(run.checkpoint)
    assert s3.exists(f"{run.dir}/checkpoints/step_00000002/manifest.json")
    model = zoo.load(run.checkpoint)
    assert torch.isfinite(model.sample(2, steps=2)).all()
    assert run.bad_samples["by_shard"][f"{url}/shard-00003.parquet"] == index.shards[3].rows
    assert run.bad_samples["by_shard"][f"{url}/shard-00001.parquet"] >= 1
    rows = [json.loads(line) for line in s3.cat_file(f"{run.dir}/metrics.jsonl").decode().splitlines()]
    assert rows[-1]["step"] == 4 and rows[-1]["bad_samples"] >= index.shards[3].rows


@pytest.mark.slow  # the S3 server
def test_a_checkpoint_another_process_writes_after_a_listing_is_found(s3_server, tmp_path):
    """s3fs caches each folder's listing in its filesystem object: a checkpoint written by another
    process (here: another s3fs object) after this one listed the run is still found by
    ckpt.resolve and ckpt.latest (as `zoo submit`'s node-loss test reads the job's last one)."""
    run = zoo.train("ddpm-digits", output=str(tmp_path), progress=False, **tiny_overrides(steps=4, keep_checkpoints=2))
    local = {step: f"{run.dir}/checkpoints/{ckpt.step_dir(step)}" for step in (2, 4)}
    s3 = fsspec.filesystem("s3")
    s3.mkdir("zoo-relist")
    root = "s3://zoo-relist/run"
    ckpt.upload(local[2], f"{root}/checkpoints/step_00000002")
    assert ckpt.latest(root) == f"{root}/checkpoints/step_00000002"  # this process's listings are cached now
    assert s3.ls("zoo-relist/run/checkpoints") == ["zoo-relist/run/checkpoints/step_00000002"]
    other = fsspec.filesystem("s3", skip_instance_cache=True)
    other.put(local[4], "zoo-relist/run/checkpoints/step_00000004", recursive=True)
    newest = f"{root}/checkpoints/step_00000004"
    assert ckpt.resolve(newest) == newest and ckpt.latest(root) == newest
    assert_bit_identical(local[4], newest)


def test_pack_raw_pixels_is_lossless_and_decodes_in_one_array(tmp_path):
    """--pixels raw stores the uint8 pixels themselves: the same images as the PNG shards, with no
    decode; a row of the wrong length is named (shard and key) or skipped."""
    from jobs.shards import decode_batch

    png, raw = str(tmp_path / "png"), str(tmp_path / "raw")
    pack("builtin:digits", png, shard_size=500, progress=False)
    index = pack("builtin:digits", raw, shard_size=500, pixels="raw", progress=False)
    assert index.columns == ["key", "pixels", "label"] and (index.image_size, index.channels) == (16, 1)
    rows = [row for _, row in iter_rows(raw, ["key", "pixels", "label"])]
    batch = {k: np.array([r[k] for r in rows], dtype=object if k != "label" else np.int64) for k in rows[0]}
    batch["path"] = np.array(["shard-00000.parquet"] * len(rows), dtype=object)
    out = decode_batch(batch, index=index, on_bad="error", url=raw)
    want = {r["key"]: decode_png(r["image"], 16, 1) for _, r in iter_rows(png, ["key", "image"])}
    assert out["image"].shape == (1437, 1, 16, 16) and out["image"].dtype == np.uint8
    assert all(np.array_equal(img, want[k]) for k, img in zip(batch["key"], out["image"]))
    assert np.array_equal(out["label"], batch["label"])

    batch["pixels"][3] = batch["pixels"][3][:-1]
    with pytest.raises(zoo.DataError, match=rf"shard {raw}/shard-00000\.parquet: sample '{batch['key'][3]}' does not "
                                            r"decode \(255 bytes of pixels, the index says 1x16x16 = 256\)"):
        decode_batch(batch, index=index, on_bad="error", url=raw)
    out = decode_batch(batch, index=index, on_bad="skip", url=raw)
    assert len(out["image"]) == 1436 and np.array_equal(out["label"], np.delete(batch["label"], 3))
    with pytest.raises(zoo.DataError, match="pixels='jpeg': one of png, raw"):
        pack("builtin:digits", str(tmp_path / "x"), pixels="jpeg", progress=False)


class FakeShard:
    """A Ray Data shard stand-in: every epoch the rows 0..n-1 in blocks of 3; records how many
    epochs were opened, and can fail in one epoch."""

    def __init__(self, n: int, fail_in: int | None = None):
        self.n, self.fail_in, self.opened = n, fail_in, 0

    def iter_batches(self, batch_size=None, **_):
        self.opened += 1
        for i in range(0, self.n, 3):
            if self.opened - 1 == self.fail_in and i >= 9:
                raise zoo.DataError(f"bad block in epoch {self.fail_in}")
            yield {"label": np.arange(i, min(i + 3, self.n))}


def test_stream_reads_the_next_epoch_ahead_in_order_and_resumes_at_its_position():
    """The read-ahead thread opens epoch 1 while the trainer is still on epoch 0, yet the trainer
    gets exactly the epochs' seeded shuffles in sequence, with their data position; a resumed
    stream continues it; an error reaches the trainer at the batch that raised it."""
    import time

    from components.random import derive_seed
    from jobs.shards import StreamData
    from jobs.shuffle import shuffled_batches

    spec = zoo.get("ddpm-digits", batch_size=4, steps=12, shuffle_buffer=8, seed=0).train
    expect = [b["label"].tolist() for e in range(3)
              for b in shuffled_batches(FakeShard(21).iter_batches(), 4, 8, derive_seed(0, "shuffle", e, 0) % 2**32)]
    assert len(expect) == 15 and len(set(sum(expect[:5], []))) == 20, "5 batches of distinct rows an epoch, 1 dropped"
    assert expect[:5] != expect[5:10], "each epoch is shuffled with its own seed"
    shard = FakeShard(21)
    stream = StreamData(shard, spec, rank=0, world=1, state=None, start=0, prefetch=3)
    seen, states = [], []
    for step in range(12):
        seen.append(stream.batch(step)["label"].tolist())
        states.append(stream.state())
        if step == 2:  # 2 batches of epoch 0 left for the trainer: epoch 1 is opened meanwhile
            deadline = time.time() + 10
            while shard.opened < 2 and time.time() < deadline:
                time.sleep(0.01)
            assert shard.opened == 2, "the next epoch starts before the trainer finishes this one"
    stream.close()
    assert seen == expect[:12]
    assert states[4] == {"kind": "stream", "epoch": 0, "batch": 5, "world_size": 1}
    assert states[6] == {"kind": "stream", "epoch": 1, "batch": 2, "world_size": 1}
    assert shard.opened == 3, "no epoch is opened past the run's last step"

    resumed = StreamData(FakeShard(21), spec, rank=0, world=1, state=states[6], start=7, prefetch=3)
    assert [resumed.batch(s)["label"].tolist() for s in range(7, 12)] == seen[7:]
    resumed.close()

    failing = StreamData(FakeShard(21, fail_in=1), spec, rank=0, world=1, state=None, start=0, prefetch=8)
    assert [failing.batch(s)["label"].tolist() for s in range(5)] == seen[:5]
    with pytest.raises(zoo.DataError, match="bad block in epoch 1"):
        for s in range(5, 10):
            failing.batch(s)
    failing.close()
