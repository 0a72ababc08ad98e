"""The digits the package ships: scikit-learn's 1,797 real 8x8 handwritten digits (bundled with
scikit-learn, nothing downloaded), upsampled to 16x16 with bilinear interpolation, in [-1, 1],
with labels, and a fixed split: 1,437 for training, 360 held out for evaluation.
"""

from __future__ import annotations

import functools
import gzip
import importlib.util
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

SIZE = 16
HELD_OUT = 360
SPLITS = ("train", "heldout")


def _raw() -> tuple[np.ndarray, np.ndarray]:
    """(images (1797, 8, 8) in 0..16, labels) as scikit-learn's ``load_digits`` returns them,
    read from the file it ships (sklearn/datasets/data/digits.csv.gz: 64 pixels and the label
    per row) without importing scikit-learn, which takes about 1.8 s of CPU: every Ray Train
    worker loads the digits in a fresh process. Its own loader where the file is not there."""
    spec = importlib.util.find_spec("sklearn")  # finds the package without running it
    found = spec is not None and spec.submodule_search_locations
    path = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data" / "digits.csv.gz" if found else None
    if path is None or not path.is_file():
        from sklearn.datasets import load_digits

        d = load_digits()
        return d.images, d.target
    with gzip.open(path, "rt") as f:
        data = np.loadtxt(f, delimiter=",")
    return data[:, :-1].reshape(-1, 8, 8), data[:, -1].astype(int)


@functools.lru_cache(maxsize=1)
def _all() -> tuple[Tensor, Tensor]:
    images, labels = _raw()
    x = torch.from_numpy(images.astype(np.float32) / 16.0)[:, None]  # (1797, 1, 8, 8) in [0, 1]
    x = F.interpolate(x, size=(SIZE, SIZE), mode="bilinear", align_corners=False).clamp(0, 1)
    return x * 2 - 1, torch.from_numpy(labels.astype(np.int64))


def load(split: str = "train") -> tuple[Tensor, Tensor]:
    """(images (N, 1, 16, 16) in [-1, 1], labels (N,)) of the fixed split."""
    if split not in SPLITS:
        raise ValueError(f"digits split must be one of {SPLITS}, got {split!r}")
    images, labels = _all()
    order = torch.from_numpy(np.random.RandomState(0).permutation(len(labels)))  # fixed forever
    idx = order[HELD_OUT:] if split == "train" else order[:HELD_OUT]
    return images[idx].clone(), labels[idx].clone()
