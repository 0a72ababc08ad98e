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

import json
import queue
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any, Literal

import fsspec
import numpy as np
import torch
from pydantic import Field, ValidationError, field_validator

from components.random import RandomSource, derive_seed
from components.spec import Spec
from jobs.decode import Layout, decode_latent, decode_pixels, decode_png, decode_rows, read_shards  # noqa: F401 (re-exported)
from jobs.shuffle import shuffled_batches
from jobs.storage import join
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
BLOCK_BYTES = 8 * 2**20  # decoded bytes per Ray Data block: large enough that per-block costs vanish


def dataset(url: str, index: ShardIndex, shard_urls: list[str], on_bad: str, counter: Any = None,
            columns: list[str] | None = None, progress: bool = False):
    """A Ray Data dataset of decoded rows: image (C, H, W) uint8 or latent, label, caption.

    One Ray Data task per shard reads it with pyarrow through the URL's fsspec filesystem (only
    the wanted columns) and decodes it in blocks of ``rows_per_block`` rows, in order
    (jobs/decode.py: its tasks import neither torch nor the zoo package, so Ray Data's worker
    processes start fast)."""
    import ray.data

    wanted = [c for c in (columns or index.columns) if c in index.columns]
    if "latent" in wanted:
        wanted = [c for c in wanted if c not in ("image", "pixels")]  # latent runs skip the pixels
    wanted = ["key", *[c for c in wanted if c != "key"]]
    ds = ray.data.from_items([{"shard": u} for u in shard_urls], override_num_blocks=len(shard_urls))
    read = partial(read_shards, layout=Layout.of(index), columns=wanted, on_bad=on_bad, counter=counter, url=url,
                   rows=rows_per_block(index))
    ds = ds.map_batches(read, batch_size=1, batch_format="numpy")
    ds.context.enable_progress_bars = progress
    ds.context.print_on_execution_start = progress
    ds.context.execution_options.preserve_order = True  # a deterministic stream (local mode too)
    return ds


def rows_per_block(index: ShardIndex) -> int:
    if index.latent_shape:
        row = int(np.prod(index.latent_shape)) * 4 * (2 if "noise" in index.columns else 1)
    else:
        row = (index.channels or 3) * (index.image_size or 64) ** 2
    return int(min(4096, max(16, BLOCK_BYTES // row)))


def decode_batch(batch: dict[str, np.ndarray], *, index: ShardIndex, on_bad: str, counter: Any = None,
                 url: str = "") -> dict:
    """jobs.decode.decode_rows with the index's layout."""
    return decode_rows(batch, layout=Layout.of(index), on_bad=on_bad, counter=counter, url=url)


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
PREFETCH_BATCHES = 8  # batches read ahead of the trainer, across epoch boundaries


class StreamData:
    """This worker's batches of a streamed shard set, with a data position (epoch, batch) that
    checkpoints save and a resume restores.

    A reader thread walks the epochs (each one ``iter_batches`` execution of this worker's
    shard, its blocks shuffled in a buffer seeded by (seed, epoch, rank): jobs/shuffle.py) and keeps up to
    ``PREFETCH_BATCHES`` batches ready: the next epoch's execution starts while the trainer
    still works through the last batches of the current one, so an epoch boundary does not
    stall it. What the trainer gets, and the data position, are those of a plain sequential
    read: the thread only reads ahead, in order, and stops after the run's last step."""

    def __init__(self, shard, spec, rank: int, world: int, state: dict | None, start: int, counter: Any = None,
                 prefetch: int = PREFETCH_BATCHES):
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
        self.prefetch = prefetch
        self._reader: _ReadAhead | None = None
        self.waited = 0.0  # seconds the trainer waited for data
        self.epoch_log: list[dict[str, float]] = []  # per epoch: start (s to its first batch), rows, read_s

    def _epochs(self, epoch: int, skip: int, batches: int):
        """(epoch, batch within it, raw batch) in order, from (epoch, skip), ``batches`` of them."""
        while batches > 0:
            seed = derive_seed(self.spec.seed, "shuffle", epoch, self.rank) % 2**32
            t0 = time.perf_counter()
            blocks = self.shard.iter_batches(batch_size=None, batch_format="numpy", prefetch_batches=2)
            it = shuffled_batches(blocks, self.local, self.spec.shuffle_buffer, seed)
            n, log = 0, {"epoch": epoch, "start_s": 0.0, "rows": 0, "read_s": 0.0}
            self.epoch_log.append(log)
            try:
                while batches > 0:
                    try:
                        raw = next(it)
                    except StopIteration:
                        break
                    except Exception as e:  # Ray wraps errors raised in Ray Data tasks
                        found = _find_data_error(e)
                        if found:
                            raise DataError(found) from None
                        raise
                    n += 1
                    if n == 1:
                        log["start_s"] = time.perf_counter() - t0
                    log["rows"], log["read_s"] = n * self.local, time.perf_counter() - t0
                    if n <= skip:  # resuming mid-epoch: re-read what was trained on, train on the rest
                        continue
                    batches -= 1
                    yield epoch, n, raw
            finally:
                if hasattr(it, "close"):
                    it.close()
            if n == 0:
                raise DataError(f"data={self.spec.data!r}: an epoch has fewer than one batch of "
                                f"{self.local} samples per worker")
            epoch, skip = epoch + 1, 0

    def batch(self, step: int) -> dict[str, Any]:
        if step != self.step:
            raise RuntimeError(f"streamed data is read in order: asked for step {step}, at step {self.step}")
        if self._reader is None:
            left = max(1, self.spec.steps - step)  # read no further than the run goes
            self._reader = _ReadAhead(self._epochs(self.epoch, self.pos, left), self.prefetch)
        t0 = time.perf_counter()
        self.epoch, self.pos, raw = self._reader.get()
        self.waited += time.perf_counter() - t0
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
        """Stop reading (training ended, or failed) while Ray is still up."""
        if self._reader is not None:
            self._reader.close()
        self._reader = None

    def state(self) -> dict[str, Any]:
        return {"kind": "stream", "epoch": self.epoch, "batch": self.pos, "world_size": self.world}

    def metrics(self) -> dict[str, Any]:
        out: dict[str, Any] = {"epoch": self.epoch, "data_wait_s": round(self.waited, 3)}
        if self.counter is not None:
            import ray

            out["bad_samples"] = ray.get(self.counter.summary.remote())["total"]
        return out


class _ReadAhead:
    """Items of a generator, produced by a thread up to ``depth`` ahead of ``get``; the
    generator's exception is raised by the ``get`` that reaches it."""

    _END = object()

    def __init__(self, items, depth: int):
        self.items, self.queue = items, queue.Queue(max(1, depth))
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="zoo-data-read-ahead", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            for item in self.items:
                if not self._put((None, item)):
                    return
            self._put((None, self._END))
        except BaseException as e:  # noqa: BLE001 - handed to the trainer's thread
            self._put((e, None))
        finally:
            self.items.close()  # closes this epoch's Ray Data iterator, in the thread that runs it

    def _put(self, entry) -> bool:
        while not self.stop.is_set():
            try:
                self.queue.put(entry, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def get(self):
        error, item = self.queue.get()
        if error is not None:
            raise error
        if item is self._END:
            raise RuntimeError("streamed data: read past the run's last step")
        return item

    def close(self, timeout: float = 10.0) -> None:
        self.stop.set()
        while True:  # unblock a put
            try:
                self.queue.get_nowait()
            except queue.Empty:
                break
        self.thread.join(timeout)


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
