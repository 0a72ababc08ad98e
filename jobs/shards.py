"""Sharded training data: Parquet shards on any fsspec URL, streamed through Ray Data.

A shard set is a folder (local, s3://, ...) written by ``zoo data pack`` / ``zoo data encode``:

    index.json               written last: format, columns, image size, classes, shards and rows
    shard-00000.parquet      rows of: key (str), image (PNG bytes) or latent (raw float16/32 bytes),
    shard-00001.parquet      label (int64, optional), caption (str, optional), noise (raw bytes
    ...                      like latent: reflow pairs, optional)
    ...

Why Parquet rather than WebDataset tar: the footer holds the row count (a truncated shard is
caught before training, named), columns are read selectively (no image bytes for latent
runs), and ``ray.data.read_parquet`` streams it from object stores with range requests.

Training builds one Ray Data pipeline on the driver (``read_parquet`` over the shards with the
URL's fsspec filesystem, then ``map_batches`` decoding PNGs on Ray Data's CPUs), Ray Train
splits it across workers (``get_dataset_shard``: ``streaming_split(equal=True)``, in order, so
the split is deterministic), and each worker shuffles its stream in a buffer seeded by
(seed, epoch, rank), turns uint8 into [-1, 1] and flips with the step's random source. The data
position (epoch, batch within it) goes into every checkpoint; a resumed run re-reads the
current epoch up to it without training on it, so it continues bit-identically. Samples are
shuffled once at pack time too, so shards are not sorted by class.

A sample that does not decode raises a DataError naming its shard and key
(``on_bad_sample="error"``), or is dropped and counted (``"skip"``: the count is the
``bad_samples`` metric). A shard whose footer does not read is handled the same way before
training starts.
"""

from __future__ import annotations

import io
import json
import posixpath
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any, Literal

import fsspec
import numpy as np
import torch
from pydantic import Field, ValidationError, field_validator

from components.random import RandomSource, derive_seed
from components.spec import Spec
from jobs.storage import join, pyarrow_fs
from zoo.errors import DataError

INDEX = "index.json"
FORMAT = "zoo-shards/parquet-1"


class ShardInfo(Spec):
    name: str = Field(description="file name inside the shard set's folder (no '/', '..', scheme or absolute path)")
    rows: int = Field(ge=0)
    bytes: int = Field(ge=0)

    @field_validator("name")
    @classmethod
    def _inside(cls, name: str) -> str:
        """Names in an index never leave the shard set: ``../x``, ``/etc/x``, ``s3://...`` are refused."""
        if not name or name in (".", "..") or "/" in name or "\\" in name or ":" in name or name.startswith("~"):
            raise ValueError(f"shard name {name!r} must be a plain file name inside the shard set's folder")
        return name


class ShardIndex(Spec):
    format: Literal["zoo-shards/parquet-1"] = FORMAT
    source: str = ""
    columns: list[str]
    image_size: int | None = Field(None, gt=0)
    channels: int | None = Field(None, gt=0)
    latent_shape: list[int] | None = None
    latent_dtype: Literal["float16", "float32"] = "float16"
    classes: list[str] | None = None
    rows: int = Field(ge=0)
    shards: list[ShardInfo]


def is_shards(url: str) -> bool:
    try:
        fs, path = fsspec.core.url_to_fs(url)
        return fs.exists(join(path, INDEX))
    except (ValueError, ImportError):
        return False


def read_index(url: str) -> ShardIndex:
    fs, path = fsspec.core.url_to_fs(url)
    try:
        with fs.open(join(path, INDEX), "rb") as f:
            return ShardIndex.model_validate_json(f.read())
    except FileNotFoundError:
        raise DataError(f"data={url!r}: no {INDEX} there (write shards with `zoo data pack`)") from None
    except ValidationError as e:
        raise DataError(f"{join(url, INDEX)}: not a shard index ({e.errors()[0]['msg']})") from None


def check_shards(url: str, index: ShardIndex, on_bad: str) -> tuple[list[str], dict[str, int]]:
    """Read every shard's Parquet footer (in parallel): the shard URLs that read, and the rows
    of those that do not (``on_bad="skip"``) or a DataError naming the first (``"error"``)."""
    import pyarrow.parquet as pq

    fs, root = fsspec.core.url_to_fs(url)

    def footer(info: ShardInfo) -> str | None:
        path = join(root, info.name)
        try:
            with fs.open(path, "rb") as f:
                rows = pq.read_metadata(f).num_rows
        except FileNotFoundError:
            return "missing"
        except Exception as e:  # pyarrow raises ArrowInvalid / OSError for truncated files
            return f"unreadable Parquet ({e})"
        return None if rows == info.rows else f"{rows} rows, the index says {info.rows}"

    with ThreadPoolExecutor(16) as pool:
        problems = list(pool.map(footer, index.shards))
    good, bad = [], {}
    for info, problem in zip(index.shards, problems):
        if problem is None:
            good.append(join(url, info.name))
        elif on_bad == "error":
            raise DataError(f"shard {join(url, info.name)}: {problem} (on_bad_sample='skip' skips it)")
        else:
            bad[join(url, info.name)] = info.rows
    return good, bad


# -- driver: the Ray Data pipeline ---------------------------------------------------------------
def dataset(url: str, index: ShardIndex, shard_urls: list[str], on_bad: str, counter: Any = None,
            columns: list[str] | None = None, progress: bool = False):
    """A Ray Data dataset of decoded rows: image (C, H, W) uint8 or latent, label, caption."""
    import ray.data

    fs, _ = pyarrow_fs(url)
    paths = [pyarrow_fs(u)[1] for u in shard_urls]
    wanted = [c for c in (columns or index.columns) if c in index.columns]
    if "latent" in wanted and "image" in wanted:
        wanted.remove("image")  # latent runs skip the pixels
    ds = ray.data.read_parquet(paths, filesystem=fs, include_paths=True)
    ds = ds.select_columns(["key", *[c for c in wanted if c != "key"], "path"])  # pushed down to the reader
    decode = partial(decode_batch, index=index, on_bad=on_bad, counter=counter, url=url)
    ds = ds.map_batches(decode, batch_format="numpy", batch_size=64)
    ds.context.enable_progress_bars = progress
    ds.context.print_on_execution_start = progress
    ds.context.execution_options.preserve_order = True  # a deterministic stream (local mode too)
    return ds


def decode_batch(batch: dict[str, np.ndarray], *, index: ShardIndex, on_bad: str, counter: Any = None,
                 url: str = "") -> dict:
    """PNG bytes -> (N, C, H, W) uint8; latent (and reflow noise) bytes -> (N, *latent_shape)
    float32. Undecodable rows raise a DataError naming shard (its URL) and key, or are dropped
    and counted."""
    n = len(batch["key"])
    batch["path"] = np.array([join(url, posixpath.basename(str(p))) for p in batch["path"]], dtype=object)
    keep, out, bad = [], {}, []
    if "image" in batch:
        images = []
        for i in range(n):
            try:
                images.append(decode_png(batch["image"][i], index.image_size, index.channels))
                keep.append(i)
            except Exception as e:
                bad.append((str(batch["path"][i]), str(batch["key"][i]), str(e)))
        out["image"] = np.stack(images) if images else np.zeros((0, index.channels, index.image_size, index.image_size), np.uint8)
    elif "latent" in batch:
        cols = [c for c in ("latent", "noise") if c in batch]  # noise: reflow pairs
        decoded: dict[str, list[np.ndarray]] = {c: [] for c in cols}
        for i in range(n):
            try:
                row = {c: decode_latent(batch[c][i], index.latent_shape, index.latent_dtype) for c in cols}
            except Exception as e:
                bad.append((str(batch["path"][i]), str(batch["key"][i]), str(e)))
                continue
            keep.append(i)
            for c in cols:
                decoded[c].append(row[c])
        for c in cols:
            out[c] = np.stack(decoded[c]) if decoded[c] else np.zeros((0, *index.latent_shape), np.float32)
    else:
        keep = list(range(n))
    if bad and on_bad == "error":
        path, key, err = bad[0]
        raise DataError(f"shard {path}: sample {key!r} does not decode ({err}); on_bad_sample='skip' skips such samples")
    if bad and counter is not None:
        counter.add.remote([(p, k) for p, k, _ in bad])
    for col in ("label", "caption"):
        if col in batch:
            out[col] = batch[col][keep]
    return out


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


def bad_sample_counter():
    """A tiny actor counting distinct skipped samples (shard, key) across Ray Data tasks."""
    import ray

    @ray.remote(num_cpus=0)
    class BadSamples:
        def __init__(self):
            self.seen: set[tuple[str, str]] = set()
            self.whole: dict[str, int] = {}

        def add(self, items: list[tuple[str, str]]) -> None:
            self.seen.update(map(tuple, items))

        def add_shards(self, shards: dict[str, int]) -> None:
            self.whole.update(shards)

        def summary(self) -> dict[str, Any]:
            by_shard: dict[str, int] = dict(self.whole)
            for shard, _ in self.seen:
                by_shard[shard] = by_shard.get(shard, 0) + 1
            return {"total": sum(by_shard.values()), "by_shard": by_shard}

    return BadSamples.remote()


# -- worker: a stream of local batches -------------------------------------------------------------
class StreamData:
    """This worker's batches of a streamed shard set, with a data position (epoch, batch) that
    checkpoints save and a resume restores."""

    def __init__(self, shard, spec, rank: int, world: int, state: dict | None, start: int, counter: Any = None):
        self.shard, self.spec, self.rank, self.world, self.counter = shard, spec, rank, world, counter
        self.local = spec.batch_size // world
        self.rows = slice(rank * self.local, (rank + 1) * self.local)
        state = state or {}
        if start and not state:
            raise DataError("resuming a streamed run needs the data position in the checkpoint's state.json")
        if state and state.get("world_size", world) != world:
            raise DataError(f"this checkpoint streamed its shards across {state['world_size']} workers; "
                            f"resume it with workers={state['world_size']} (the split depends on the worker count)")
        self.epoch, self.pos = int(state.get("epoch", 0)), int(state.get("batch", 0))
        self.step = start
        self._it = None
        self._bad = 0

    def _open_epoch(self, skip: int) -> None:
        seed = derive_seed(self.spec.seed, "shuffle", self.epoch, self.rank) % 2**32
        batches = self.shard.iter_batches(
            batch_size=self.local, batch_format="numpy", drop_last=True, prefetch_batches=2,
            local_shuffle_buffer_size=self.spec.shuffle_buffer or None,
            local_shuffle_seed=seed if self.spec.shuffle_buffer else None)
        self._it = iter(batches)
        for _ in range(skip):  # resuming mid-epoch: re-read what was trained on, train on the rest
            self._next()

    def _next(self) -> dict[str, np.ndarray]:
        try:
            return next(self._it)
        except StopIteration:
            raise
        except Exception as e:  # Ray wraps errors raised in Ray Data tasks
            found = _find_data_error(e)
            if found:
                raise DataError(found) from None
            raise

    def batch(self, step: int) -> dict[str, Any]:
        if step != self.step:
            raise RuntimeError(f"streamed data is read in order: asked for step {step}, at step {self.step}")
        if self._it is None:
            self._open_epoch(self.pos)
        try:
            raw = self._next()
        except StopIteration:
            if self.pos == 0:
                raise DataError(f"data={self.spec.data!r}: an epoch has fewer than one batch of "
                                f"{self.local} samples per worker") from None
            self.epoch, self.pos = self.epoch + 1, 0
            self._open_epoch(0)
            return self.batch(step)
        self.pos += 1
        self.step += 1
        return self._to_torch(raw, step)

    def _to_torch(self, raw: dict[str, np.ndarray], step: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if "image" in raw:
            out["image"] = torch.from_numpy(raw["image"]).float().div_(127.5).sub_(1.0)
            if self.spec.hflip:
                flip = RandomSource.for_step(self.spec.seed, step, self.spec.batch_size, self.rows, stream="hflip").rand() < 0.5
                out["image"] = torch.where(flip[:, None, None, None], out["image"].flip(-1), out["image"])
        for col in ("latent", "noise"):
            if col in raw:
                out[col] = torch.from_numpy(np.ascontiguousarray(raw[col]))
        if "label" in raw:
            out["label"] = torch.from_numpy(raw["label"].astype(np.int64))
        if "caption" in raw:
            out["caption"] = [str(c) for c in raw["caption"]]
        return out

    def close(self) -> None:
        """Stop this epoch's stream (training ended mid-epoch) while Ray is still up."""
        if self._it is not None and hasattr(self._it, "close"):
            self._it.close()
        self._it = None

    def state(self) -> dict[str, Any]:
        return {"kind": "stream", "epoch": self.epoch, "batch": self.pos, "world_size": self.world}

    def metrics(self) -> dict[str, Any]:
        out: dict[str, Any] = {"epoch": self.epoch}
        if self.counter is not None:
            import ray

            out["bad_samples"] = ray.get(self.counter.summary.remote())["total"]
        return out


def _find_data_error(error: BaseException) -> str | None:
    e, seen = error, set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, DataError):
            return str(e)
        e = getattr(e, "cause", None) or e.__cause__
    text, marker = str(error), "DataError: "
    return text.split(marker, 1)[1].splitlines()[0] if marker in text else None


def describe(index: ShardIndex) -> str:
    return json.dumps(index.model_dump(exclude={"shards"}), indent=1)
