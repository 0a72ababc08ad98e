"""Reference statistics of a dataset: the mean and covariance of its detector features (and,
optionally, the features themselves for precision/recall), stored as an ``.npz`` next to the data.

    <data dir>/stats.<detector>.npz               for a folder of shards or images
    <dir>/<stem>.stats.<detector>.npz             for a single file, e.g. train.safetensors

The file holds ``mu``, ``sigma`` (pytorch-fid's / TTUR's keys, so their precomputed statistics
load too), and ``name``, ``detector`` (the detector's id: network, version, weights digest), ``n``,
``format``; statistics made by a different detector are refused, never compared. ``builtin:digits``
uses the held-out split, computed once and cached under $ZOO_CACHE.

Readable data: ``builtin:digits`` (``builtin:digits:train`` for the training split), a
``.safetensors`` file with an ``image`` column in [-1, 1] (what ``zoo.train`` reads), or a
folder of PNG/JPEG images.
"""

from __future__ import annotations

import io
import os
import posixpath
import re
from dataclasses import dataclass
from pathlib import Path

import fsspec
import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from zoo.errors import DataError
from zoo.metrics.detectors import Detector, to_uint8
from zoo.metrics.frechet import gaussian_stats
from zoo.urls import write_whole

FORMAT = 1
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


@dataclass(frozen=True, eq=False)
class ReferenceStats:
    name: str
    detector: str  # "" for statistics from other tools (pytorch-fid / TTUR .npz files)
    mu: np.ndarray
    sigma: np.ndarray
    n: int
    features: np.ndarray | None = None

    @classmethod
    def from_features(cls, features: np.ndarray, name: str, detector: str, keep_features: bool = False) -> ReferenceStats:
        mu, sigma = gaussian_stats(features)
        return cls(name, detector, mu, sigma, len(features), np.asarray(features, np.float32) if keep_features else None)

    def check(self, detector: Detector, where: str = "") -> None:
        dim = len(self.mu)
        if self.detector and self.detector != detector.id:
            raise DataError(f"reference statistics {where or self.name!r} were made by {self.detector!r}, "
                            f"not by this {detector.id!r}: recompute them (`zoo stats`)")
        probe = {"inception": 2048, "digits": 64}.get(detector.name)
        if probe is not None and dim != probe:
            raise DataError(f"reference statistics {where or self.name!r} are {dim}-d; the {detector.name} detector gives {probe}-d features")

    def save(self, url: str) -> str:
        buf = io.BytesIO()
        extra = {} if self.features is None else {"features": self.features}
        np.savez(buf, mu=self.mu, sigma=self.sigma, name=np.str_(self.name), detector=np.str_(self.detector),
                 n=np.int64(self.n), format=np.int64(FORMAT), **extra)
        return write_whole(url, buf.getvalue())  # whole or not at all: another process may be reading the cache

    @classmethod
    def load(cls, url: str) -> ReferenceStats:
        try:
            with fsspec.open(url, "rb") as f:
                blob = f.read()
        except FileNotFoundError:
            raise DataError(f"reference statistics {url!r}: file not found") from None
        try:
            z = np.load(io.BytesIO(blob), allow_pickle=False)
            mu, sigma = z["mu"], z["sigma"]
        except Exception as e:  # not an npz, or no mu/sigma
            raise DataError(f"reference statistics {url!r}: not an .npz with 'mu' and 'sigma' ({e})") from None
        if "format" in z and int(z["format"]) > FORMAT:
            raise DataError(f"reference statistics {url!r}: format {int(z['format'])} is newer than this zoo's {FORMAT}")
        return cls(
            str(z["name"]) if "name" in z else url,
            str(z["detector"]) if "detector" in z else "",
            mu.astype(np.float64), sigma.astype(np.float64),
            int(z["n"]) if "n" in z else -1,
            z["features"] if "features" in z else None,
        )


def stats_url(data: str, detector: str) -> str:
    """Where the statistics of ``data`` under ``detector`` live (builtin data: in $ZOO_CACHE)."""
    if data.startswith("builtin:"):
        root = Path(os.environ.get("ZOO_CACHE", Path.home() / ".cache" / "diffusion-zoo"))
        return str(root / "stats" / f"{re.sub(r'[^A-Za-z0-9_.-]+', '-', data)}.{re.sub(r'[^A-Za-z0-9_.-]+', '-', detector)}.npz")
    base = data.rstrip("/")
    stem, ext = posixpath.splitext(base)
    if ext and not base.endswith(IMAGE_SUFFIXES):
        return f"{stem}.stats.{detector}.npz"
    return f"{base}/stats.{detector}.npz"


def load_images(data: str, progress: bool = True) -> Tensor:
    """The images of ``data`` as uint8 (N, C, H, W)."""
    if data.startswith("builtin:digits"):
        from zoo.data import digits

        split = data.split(":")[2] if data.count(":") == 2 else "heldout"
        return to_uint8((digits.load(split)[0] + 1) / 2)
    if data.startswith("builtin:"):
        raise DataError(f"unknown builtin data {data!r}; built in: builtin:digits[:train|:heldout]")
    if data.endswith(".safetensors"):
        from zoo.tensorfile import read_tensor_file

        cols = read_tensor_file(data)
        if "image" not in cols:
            raise DataError(f"{data}: no 'image' column (has {sorted(cols)})")
        return to_uint8((cols["image"].float() + 1) / 2)
    fs, path = fsspec.core.url_to_fs(data)
    if not fs.isdir(path):
        raise DataError(f"{data!r}: not builtin:digits, a .safetensors file or a folder of images")
    files = sorted(p for p in fs.find(path) if p.lower().endswith(IMAGE_SUFFIXES))
    if not files:
        raise DataError(f"{data!r}: no {'/'.join(IMAGE_SUFFIXES)} images in this folder")
    from PIL import Image

    arrays = []
    for p in tqdm(files, desc=f"read {data}", unit="img", mininterval=2.0, leave=False, disable=not progress):
        with fs.open(p, "rb") as f:
            img = Image.open(f)
            arrays.append(np.asarray(img.convert("L" if img.mode in ("L", "1", "I;16") else "RGB")))
    shapes = {a.shape for a in arrays}
    if len(shapes) != 1:
        raise DataError(f"{data!r}: images differ in size {sorted(shapes)[:4]}; resize them first")
    x = torch.from_numpy(np.stack(arrays))
    return x[:, None] if x.ndim == 3 else x.permute(0, 3, 1, 2).contiguous()


def compute(data: str, detector: Detector, keep_features: bool = False, device: str = "cpu",
            progress: bool = True) -> ReferenceStats:
    images = load_images(data, progress)
    feats = []
    for i in tqdm(range(0, len(images), detector.batch), desc=f"{detector.name} features of {data}", mininterval=2.0,
                  leave=False, disable=not progress):
        feats.append(detector(images[i : i + detector.batch], device)["features"])
    return ReferenceStats.from_features(np.concatenate(feats), data, detector.id, keep_features)


def reference(data: str, detector: Detector, *, features: bool = False, device: str = "cpu",
              progress: bool = True) -> ReferenceStats:
    """The statistics of ``data`` (a dataset URL or an ``.npz`` of statistics): read from next to
    the data when they are there, else computed and written there (builtin data: to the cache)."""
    if data.endswith(".npz"):
        stats = ReferenceStats.load(data)
        stats.check(detector, data)
        if features and stats.features is None:
            raise DataError(f"{data}: precision/recall need the reference features; make them with `zoo stats DATA --features`")
        return stats
    url = stats_url(data, detector.id if data.startswith("builtin:") else detector.name)
    fs, path = fsspec.core.url_to_fs(url)
    if fs.exists(path):
        stats = ReferenceStats.load(url)
        stats.check(detector, url)  # made by other weights: an error, never overwritten
        if stats.features is not None or not features:
            return stats
    stats = compute(data, detector, keep_features=features or data.startswith("builtin:"), device=device, progress=progress)
    stats.save(url)
    return stats
