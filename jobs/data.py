"""Training data as a function of the step: batch k of the run is the same global batch whatever
the number of workers, and worker r takes rows [r B/W, (r+1) B/W) of it. The order is a
permutation seeded by (seed, epoch), so the data position of a run is its step alone.

Sources (``TrainSpec.data``):

- ``builtin:digits``: the shipped digits (image, label).
- a URL of a ``.safetensors`` file of equal-length columns, e.g. ``image`` (N, C, H, W) in
  [-1, 1], ``label`` (N,), ``noise`` (reflow pairs), ``latent`` (precomputed x0 of latent
  models): small datasets held in memory.

Every column reaches the loop; ``image`` goes through the autoencoder unless ``latent`` is given,
``label`` to the conditioner, the rest to the objective as they are.
"""

from __future__ import annotations

import fsspec
import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from torch import Tensor

from components.random import RandomSource, derive_seed
from zoo.errors import DataError
from zoo.specs import TrainSpec

BUILTIN = ("builtin:digits",)


class InMemoryData:
    """Columns small enough to hold in memory (the shipped digits, reflow pairs)."""

    def __init__(self, columns: dict[str, Tensor], spec: TrainSpec, rank: int, world: int):
        lengths = {k: len(v) for k, v in columns.items()}
        if len(set(lengths.values())) != 1:
            raise DataError(f"{spec.data}: columns differ in length: {lengths}")
        n = next(iter(lengths.values()))
        if n < spec.batch_size:
            raise DataError(f"{spec.data}: {n} samples < batch_size {spec.batch_size}")
        self.columns, self.spec, self.n = columns, spec, n
        self.local = spec.batch_size // world
        self.rows = slice(rank * self.local, (rank + 1) * self.local)
        self.per_epoch = n // spec.batch_size
        self._epoch, self._order = -1, None

    def batch(self, step: int) -> dict[str, Tensor]:
        epoch, k = divmod(step, self.per_epoch)
        if epoch != self._epoch:
            g = torch.Generator().manual_seed(derive_seed(self.spec.seed, "data", epoch))
            self._order, self._epoch = torch.randperm(self.n, generator=g), epoch
        B = self.spec.batch_size
        idx = self._order[k * B : (k + 1) * B][self.rows]
        out = {name: col[idx] for name, col in self.columns.items()}
        if self.spec.hflip and "image" in out:
            flip = RandomSource.for_step(self.spec.seed, step, B, self.rows, stream="hflip").rand() < 0.5
            out["image"] = torch.where(flip[:, None, None, None], out["image"].flip(-1), out["image"])
        return out


def read_tensor_file(url: str) -> dict[str, Tensor]:
    try:
        with fsspec.open(url, "rb") as f:
            blob = f.read()
    except FileNotFoundError:
        raise DataError(f"data={url!r}: file not found") from None
    try:
        return st_load(blob)
    except SafetensorError as e:
        raise DataError(f"data={url!r}: not a valid safetensors file ({e})") from None


def open_data(spec: TrainSpec, rank: int = 0, world: int = 1) -> InMemoryData:
    if spec.data is None:
        raise DataError("no training data: pass data= (a URL of shards, or builtin:digits)")
    if spec.data == "builtin:digits":
        from zoo.data import digits

        images, labels = digits.load("train")
        return InMemoryData({"image": images, "label": labels}, spec, rank, world)
    if spec.data.endswith(".safetensors"):
        return InMemoryData(read_tensor_file(spec.data), spec, rank, world)
    raise DataError(f"data={spec.data!r}: unknown source; built in: {', '.join(BUILTIN)}; or a .safetensors file of columns")
