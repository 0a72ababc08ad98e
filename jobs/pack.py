"""``zoo data pack``: write training shards (jobs/shards.py's Parquet format) to any fsspec URL.

Sources:

- ``builtin:digits`` (or ``builtin:digits/heldout``): the shipped digits, with labels.
- a CIFAR-10 directory, binary version (``data_batch_1.bin`` ... ``test_batch.bin``) or python
  version (``data_batch_1`` ... ``test_batch``, read with an unpickler that only builds numpy
  arrays, lists, dicts and strings), with labels; ``split`` picks train or test.
- any folder of images (png, jpg, jpeg, webp, bmp), searched recursively. When every image sits
  in a first-level subfolder, the subfolders are the classes (ImageFolder layout: AFHQ's
  ``train/{cat,dog,wild}``, a CIFAR-10 export as PNGs), labelled in sorted order. A ``.txt``
  beside an image (same stem) is its caption.

Images are center-cropped to a square and resized to ``size`` when it is given (else they must
all have one square size), converted to ``channels``, stored lossless, shuffled once with
``seed`` and written ``shard_size`` samples (or bytes: "64MB") per shard; ``index.json`` is
written last, so a half-written shard set is never read.

``pixels="png"`` (default) stores each image as PNG bytes in an ``image`` column: small on
storage, but every read decodes them. ``pixels="raw"`` stores the uint8 pixels themselves
(C x H x W, row-major) in a ``pixels`` column: larger (no compression), and read with no decode
at all, a whole batch turned into one array at once. Pick raw when decoding, not storage or
bandwidth, limits the reader (small images, few CPUs per accelerator).
"""

from __future__ import annotations

import io
import pickle
import posixpath
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import fsspec
import numpy as np
import torch
from tqdm.auto import tqdm

from jobs.shards import INDEX, ShardIndex, ShardInfo
from jobs.storage import join
from zoo.errors import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


@dataclass
class Sample:
    key: str
    load: Any  # () -> PIL image or uint8 array (H, W[, C])
    label: int | None = None
    caption: str | None = None


PIXELS = ("png", "raw")


def pack(src: str, dest: str, *, shard_size: int | str = 1000, size: int | None = None, channels: int | None = None,
         split: str = "train", seed: int = 0, shuffle: bool = True, pixels: str = "png",
         progress: bool = True) -> ShardIndex:
    """Pack ``src`` into Parquet shards at ``dest``; returns the index written last."""
    samples, classes, default_channels = _source(src, split)
    return write_samples(samples, dest, source=src, classes=classes, channels=channels or default_channels,
                         shard_size=shard_size, size=size, seed=seed, shuffle=shuffle, pixels=pixels,
                         progress=progress)


def write_samples(samples: list[Sample], dest: str, *, source: str, classes: list[str] | None, channels: int,
                  shard_size: int | str = 1000, size: int | None = None, seed: int = 0, shuffle: bool = True,
                  pixels: str = "png", progress: bool = True) -> ShardIndex:
    """Write ``samples`` as a shard set at ``dest`` (what ``pack`` does once it has read its source)."""
    if pixels not in PIXELS:
        raise DataError(f"pixels={pixels!r}: one of {', '.join(PIXELS)}")
    if not samples:
        raise DataError(f"{source}: no images found")
    if shuffle:
        order = np.random.default_rng(seed).permutation(len(samples))
        samples = [samples[i] for i in order]
    limit_rows, limit_bytes = _parse_size(shard_size)
    has_label = all(s.label is not None for s in samples)
    has_caption = any(s.caption is not None for s in samples)
    fs, root = fsspec.core.url_to_fs(dest)
    fs.makedirs(root, exist_ok=True)
    if fs.exists(join(root, INDEX)):
        raise DataError(f"{dest} already holds a shard set ({INDEX}); pack into a new folder")

    shards: list[ShardInfo] = []
    rows: list[dict[str, Any]] = []
    nbytes = 0
    seen_size = size

    column = "image" if pixels == "png" else "pixels"

    def encode(s: Sample) -> dict[str, Any]:
        blob, got = _encode(s, size, channels, pixels)
        return {"key": s.key, column: blob, "label": s.label, "caption": s.caption, "_size": got}

    def flush() -> None:
        nonlocal rows, nbytes
        if rows:
            shards.append(write_shard(fs, root, len(shards), rows, has_label, has_caption, pixels=pixels == "raw"))
            rows, nbytes = [], 0

    bar = tqdm(total=len(samples), desc=f"pack {source}", unit="img", disable=not progress, mininterval=1.0)
    with ThreadPoolExecutor(4) as pool:
        for row in pool.map(encode, samples):
            if seen_size is None:
                seen_size = row["_size"]
            elif row["_size"] != seen_size:
                raise DataError(f"{source}: {row['key']} is {row['_size']}x{row['_size']}, earlier images are "
                                f"{seen_size}x{seen_size}; pass size= to resize them all")
            rows.append(row)
            nbytes += len(row[column])
            bar.update(1)
            if len(rows) >= limit_rows or nbytes >= limit_bytes:
                flush()
    flush()
    bar.close()
    columns = ["key", column] + (["label"] if has_label else []) + (["caption"] if has_caption else [])
    index = ShardIndex(source=source, columns=columns, image_size=seen_size, channels=channels, classes=classes,
                       rows=sum(s.rows for s in shards), shards=shards)
    write_index(fs, root, index)
    return index


def write_shard(fs, root: str, i: int, rows: list[dict[str, Any]], has_label: bool, has_caption: bool,
                latent: bool = False, noise: bool = False, pixels: bool = False) -> ShardInfo:
    import pyarrow as pa
    import pyarrow.parquet as pq

    cols: dict[str, Any] = {"key": pa.array([r["key"] for r in rows], pa.string())}
    name = "latent" if latent else "pixels" if pixels else "image"
    cols[name] = pa.array([r[name] for r in rows], pa.binary())
    if noise:  # reflow pairs: the noise each latent was generated from
        cols["noise"] = pa.array([r["noise"] for r in rows], pa.binary())
    if has_label:
        cols["label"] = pa.array([r["label"] for r in rows], pa.int64())
    if has_caption:
        cols["caption"] = pa.array([r["caption"] or "" for r in rows], pa.string())
    buf = io.BytesIO()
    pq.write_table(pa.table(cols), buf, row_group_size=256, compression="zstd" if latent or pixels else "none")
    blob = buf.getvalue()
    shard = f"shard-{i:05d}.parquet"
    with fs.open(posixpath.join(root, shard), "wb") as f:
        f.write(blob)
    return ShardInfo(name=shard, rows=len(rows), bytes=len(blob))


def write_index(fs, root: str, index: ShardIndex) -> None:
    with fs.open(posixpath.join(root, INDEX), "w") as f:
        f.write(index.model_dump_json(indent=1))


def _parse_size(value: int | str) -> tuple[float, float]:
    """(max rows, max bytes) per shard: 1000 -> 1000 samples; "64MB" -> 64 MiB of encoded images."""
    if isinstance(value, int) or str(value).isdigit():
        n = int(value)
        if n < 1:
            raise DataError(f"shard_size must be >= 1, got {n}")
        return n, float("inf")
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMG])i?B\s*", str(value), re.I)
    if not m:
        raise DataError(f"shard_size={value!r}: give samples per shard (1000) or a size (64MB, 500KB, 1GB)")
    return float("inf"), float(m.group(1)) * 1024 ** " KMG".index(m.group(2).upper())


def _encode(s: Sample, size: int | None, channels: int, pixels: str) -> tuple[bytes, int]:
    """(PNG bytes, or raw uint8 C x H x W bytes; side) of a sample, cropped and resized."""
    from PIL import Image

    try:
        img = s.load()
        img = Image.fromarray(img) if isinstance(img, np.ndarray) else img
        img = img.convert("L" if channels == 1 else "RGB")
    except Exception as e:
        raise DataError(f"{s.key}: cannot read image ({e})") from None
    w, h = img.size
    if size is not None and (w, h) != (size, size):
        side = min(w, h)
        left, top = (w - side) // 2, (h - side) // 2
        img = img.crop((left, top, left + side, top + side)).resize((size, size), Image.Resampling.BICUBIC)
    elif size is None and w != h:
        raise DataError(f"{s.key}: {w}x{h} is not square; pass size= to center-crop and resize")
    if pixels == "raw":
        arr = np.asarray(img, np.uint8)
        return (arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)).tobytes(), img.size[0]
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=False, compress_level=1)
    return buf.getvalue(), img.size[0]


# -- sources --------------------------------------------------------------------------------------
def _source(src: str, split: str) -> tuple[list[Sample], list[str] | None, int]:
    """(samples, class names or None, natural channel count)."""
    if src.startswith("builtin:digits"):
        from zoo.data import digits

        which = src.split("/", 1)[1] if "/" in src else split
        images, labels = digits.load("heldout" if which in ("heldout", "test") else "train")
        arr = ((images[:, 0] + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).numpy()
        return ([Sample(f"digits-{which}-{i:05d}", (lambda a=a: a), int(y)) for i, (a, y) in enumerate(zip(arr, labels))],
                [str(d) for d in range(10)], 1)
    fs, root = fsspec.core.url_to_fs(src)
    if not fs.isdir(root):
        raise DataError(f"{src}: not a folder (give a folder of images, a CIFAR-10 folder, or builtin:digits)")
    names = {posixpath.basename(p) for p in fs.ls(root, detail=False)}
    if {"data_batch_1.bin", "test_batch.bin"} & names:
        return _cifar_bin(fs, root, split), CIFAR10_CLASSES, 3
    if {"data_batch_1", "test_batch"} & names:
        return _cifar_py(fs, root, split), CIFAR10_CLASSES, 3
    return _image_folder(fs, root, src)


def _cifar_files(fs, root: str, split: str, suffix: str) -> list[str]:
    if split not in ("train", "test"):
        raise DataError(f"CIFAR-10 split must be train or test, got {split!r}")
    names = [f"data_batch_{i}{suffix}" for i in range(1, 6)] if split == "train" else [f"test_batch{suffix}"]
    found = [posixpath.join(root, n) for n in names if fs.exists(posixpath.join(root, n))]
    if not found:
        raise DataError(f"{root}: no CIFAR-10 {split} batches ({', '.join(names)})")
    return found


def _cifar_bin(fs, root: str, split: str) -> list[Sample]:
    """The binary version: records of 1 label byte + 3072 bytes (R, G, B planes of 32x32)."""
    out = []
    for path in _cifar_files(fs, root, split, ".bin"):
        blob = fs.cat_file(path)
        if len(blob) % 3073:
            raise DataError(f"{path}: {len(blob)} bytes is not a whole number of 3073-byte CIFAR-10 records")
        rec = np.frombuffer(blob, np.uint8).reshape(-1, 3073)
        name = posixpath.basename(path)
        for i, r in enumerate(rec):
            img = r[1:].reshape(3, 32, 32).transpose(1, 2, 0)
            out.append(Sample(f"{name}:{i}", (lambda a=img: a), int(r[0])))
    return out


class _ArraysOnly(pickle.Unpickler):
    """Unpickles numpy arrays, lists, dicts and strings; refuses everything else (no code runs)."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("builtins", "list"), ("builtins", "dict")}

    def find_class(self, module: str, name: str):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name}")


def _cifar_py(fs, root: str, split: str) -> list[Sample]:
    out = []
    for path in _cifar_files(fs, root, split, ""):
        try:
            d = _ArraysOnly(io.BytesIO(fs.cat_file(path)), encoding="bytes").load()
            data, labels = d[b"data"], d[b"labels"]
        except (pickle.UnpicklingError, KeyError, EOFError) as e:
            raise DataError(f"{path}: not a CIFAR-10 python batch ({e})") from None
        data = np.asarray(data, np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        name = posixpath.basename(path)
        out += [Sample(f"{name}:{i}", (lambda a=a: a), int(y)) for i, (a, y) in enumerate(zip(data, labels))]
    return out


def _image_folder(fs, root: str, src: str) -> tuple[list[Sample], list[str] | None, int]:
    files = sorted(p for p in fs.find(root) if p.lower().endswith(IMAGE_SUFFIXES))
    captions = {p.rsplit(".", 1)[0] for p in fs.find(root) if p.endswith(".txt")}
    rel = [posixpath.relpath(p, root) for p in files]
    classes = None
    if files and all("/" in r for r in rel):
        classes = sorted({r.split("/", 1)[0] for r in rel})
    samples = []
    for path, r in zip(files, rel):
        stem = path.rsplit(".", 1)[0]
        caption = fs.cat_file(stem + ".txt").decode().strip() if stem in captions else None
        label = classes.index(r.split("/", 1)[0]) if classes else None
        samples.append(Sample(r, _opener(fs, path), label, caption))
    channels = 3
    if files:
        from PIL import Image

        with fs.open(files[0], "rb") as f, Image.open(f) as im:
            channels = 1 if im.mode in ("L", "1", "I;16", "I") else 3
    return samples, classes, channels


def _opener(fs, path: str):
    def load():
        from PIL import Image

        with fs.open(path, "rb") as f:
            im = Image.open(io.BytesIO(f.read()))
            im.load()
            return im

    return load


def iter_rows(url: str, columns: list[str]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(shard name, row dict) of every shard of a shard set, in order (no Ray needed)."""
    import pyarrow.parquet as pq

    from jobs.shards import read_index

    index = read_index(url)
    fs, root = fsspec.core.url_to_fs(url)
    for info in index.shards:
        with fs.open(posixpath.join(root, info.name), "rb") as f:
            table = pq.read_table(f, columns=[c for c in columns if c in index.columns])
        for row in table.to_pylist():
            yield info.name, row
