"""Reading and decoding shard rows, as Ray Data's tasks run it (jobs/shards.py builds the
pipeline). This module imports numpy, pyarrow, fsspec and PIL only, not torch nor the zoo package:
every Ray Data worker process imports it before its first task, and on a loaded 2-core machine
importing torch and the zoo facade took 35 s, paid again by each new worker.

- PNG bytes (``image``) -> (N, C, H, W) uint8, one image at a time;
- raw pixels (``pixels``, ``zoo data pack --pixels raw``) -> (N, C, H, W) uint8 in one array;
- latent (and reflow ``noise``) bytes -> (N, *latent_shape) float32.
"""

from __future__ import annotations

import io
import posixpath
from dataclasses import dataclass
from typing import Any

import fsspec
import numpy as np

from jobs.storage import join


@dataclass(frozen=True)
class Layout:
    """What a row holds, from the shard index (plain values: cheap to ship to Ray Data tasks)."""

    image_size: int | None
    channels: int | None
    latent_shape: tuple[int, ...] | None
    latent_dtype: str

    @classmethod
    def of(cls, index) -> Layout:
        shape = tuple(index.latent_shape) if index.latent_shape else None
        return cls(index.image_size, index.channels, shape, index.latent_dtype)


def read_shards(items: dict[str, np.ndarray], *, layout: Layout, columns: list[str], on_bad: str, counter: Any,
                url: str, rows: int):
    """A Ray Data task: the shards named in ``items``, read ``rows`` rows at a time and decoded."""
    import pyarrow.parquet as pq

    for shard in items["shard"]:
        shard = str(shard)
        fs, path = fsspec.core.url_to_fs(shard)
        with fs.open(path, "rb") as f:
            for rb in pq.ParquetFile(f).iter_batches(batch_size=rows, columns=columns, use_threads=False):
                batch = {c: rb.column(c).to_numpy(zero_copy_only=False) for c in columns}
                batch["path"] = np.full(len(batch["key"]), shard, dtype=object)
                yield decode_rows(batch, layout=layout, on_bad=on_bad, counter=counter, url=url)


def decode_rows(batch: dict[str, np.ndarray], *, layout: Layout, on_bad: str, counter: Any = None,
                url: str = "") -> dict:
    """PNG bytes or raw pixels -> (N, C, H, W) uint8; latent (and reflow noise) bytes ->
    (N, *latent_shape) float32. Undecodable rows raise a DataError naming shard (its URL) and
    key, or are dropped and counted."""
    n = len(batch["key"])
    out: dict[str, np.ndarray] = {}
    bad: list[tuple[int, str]] = []  # (row, why)
    if "pixels" in batch:
        out["image"], bad = decode_pixels(batch["pixels"], (layout.channels, layout.image_size, layout.image_size))
    elif "image" in batch:
        images = []
        for i in range(n):
            try:
                images.append(decode_png(batch["image"][i], layout.image_size, layout.channels))
            except Exception as e:
                bad.append((i, str(e)))
        out["image"] = np.stack(images) if images else np.zeros((0, layout.channels, layout.image_size, layout.image_size), np.uint8)
    elif "latent" in batch:
        cols = [c for c in ("latent", "noise") if c in batch]  # noise: reflow pairs
        decoded: dict[str, list[np.ndarray]] = {c: [] for c in cols}
        for i in range(n):
            try:
                row = {c: decode_latent(batch[c][i], layout.latent_shape, layout.latent_dtype) for c in cols}
            except Exception as e:
                bad.append((i, str(e)))
                continue
            for c in cols:
                decoded[c].append(row[c])
        for c in cols:
            out[c] = np.stack(decoded[c]) if decoded[c] else np.zeros((0, *layout.latent_shape), np.float32)
    if bad:  # shard URLs only for the rows that need naming
        named = [(join(url, posixpath.basename(str(batch["path"][i]))), str(batch["key"][i]), why) for i, why in bad]
        if on_bad == "error":
            from zoo.errors import DataError  # only here: importing zoo costs a Ray Data worker seconds

            path, key, err = named[0]
            raise DataError(f"shard {path}: sample {key!r} does not decode ({err}); "
                            "on_bad_sample='skip' skips such samples")
        if counter is not None:
            counter.add.remote([(p, k) for p, k, _ in named])
        keep = np.setdiff1d(np.arange(n), [i for i, _ in bad])
    else:
        keep = slice(None)
    for col in ("label", "caption"):
        if col in batch:
            out[col] = batch[col][keep]
    return out


def decode_pixels(blobs: np.ndarray, shape: tuple[int, int, int]) -> tuple[np.ndarray, list[tuple[int, str]]]:
    """Raw uint8 pixel rows (``zoo data pack --pixels raw``) -> (N, C, H, W) at once, and the
    rows whose byte count is not C x H x W."""
    size = int(np.prod(shape))
    lengths = np.fromiter(map(len, blobs), np.int64, count=len(blobs))
    wrong = np.flatnonzero(lengths != size)
    if len(wrong):
        good = np.flatnonzero(lengths == size)
        bad = [(int(i), f"{lengths[i]} bytes of pixels, the index says {shape[0]}x{shape[1]}x{shape[2]} = {size}")
               for i in wrong]
        blobs = blobs[good]
    else:
        bad = []
    arr = np.frombuffer(b"".join(blobs), np.uint8).reshape(len(blobs), *shape).copy()  # writable
    return arr, bad


def decode_png(blob: bytes, size: int, channels: int) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(blob)) as im:
        im.load()
        arr = np.asarray(im.convert("L" if channels == 1 else "RGB"))
    if arr.shape[:2] != (size, size):
        raise ValueError(f"image is {arr.shape[1]}x{arr.shape[0]}, the index says {size}x{size}")
    return arr[None] if channels == 1 else arr.transpose(2, 0, 1).copy()


def decode_latent(blob: bytes, shape: list[int], dtype: str) -> np.ndarray:
    arr = np.frombuffer(blob, dtype=np.dtype(dtype).newbyteorder("<"))
    if arr.size != int(np.prod(shape)):
        raise ValueError(f"latent has {arr.size} values, the index says shape {shape}")
    return arr.reshape(shape).astype(np.float32)
