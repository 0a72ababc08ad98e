"""Training data as a function of the step: batch k of the run is the same global batch whatever
the number of workers, and worker r takes rows [r B/W, (r+1) B/W) of it. The order is a
permutation seeded by (seed, epoch), so the data position of a run is its step alone.

Sources (``TrainSpec.data``):

- ``builtin:digits``: the shipped digits (image, label).
- a URL of a ``.safetensors`` file of equal-length columns, e.g. ``image`` (N, C, H, W) in
  [-1, 1], ``label`` (N,), ``noise`` (reflow pairs), ``latent`` (precomputed x0 of latent
  models): small datasets held in memory.

- a URL of a folder of Parquet shards with an ``index.json`` (``zoo data pack``), streamed
  through Ray Data (jobs/shards.py).

Every column reaches the loop; ``image`` goes through the autoencoder unless ``latent`` is given,
``label`` to the conditioner, the rest to the objective as they are.
"""

from __future__ import annotations

import fsspec
import torch
from torch import Tensor

from components.random import RandomSource, derive_seed
from zoo.errors import DataError
from zoo.specs import TrainSpec
from zoo.tensorfile import read_tensor_file

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

    def state(self) -> dict:
        """The data position is the step itself; recorded for the reader of a checkpoint."""
        return {"kind": "memory"}

    def metrics(self) -> dict:
        return {}

    def close(self) -> None:
        pass


def kind(url: str | None) -> str:
    """'memory' (builtin or a .safetensors file) or 'shards' (a folder with index.json)."""
    if url is None:
        raise DataError("no training data: pass data= (a URL of shards, or builtin:digits)")
    if url in BUILTIN or url.endswith(".safetensors"):
        return "memory"
    from jobs.shards import is_shards

    if is_shards(url):
        return "shards"
    raise DataError(f"data={url!r}: unknown source; built in: {', '.join(BUILTIN)}; a .safetensors file of "
                    "columns; or a folder of shards with index.json (`zoo data pack`)")


def open_data(spec: TrainSpec, rank: int = 0, world: int = 1, *, shard=None, state: dict | None = None,
              start: int = 0, counter=None):
    """This worker's data: in memory, or its Ray Data shard of a streamed shard set."""
    if kind(spec.data) == "shards":
        from jobs.shards import StreamData

        if shard is None:
            raise DataError(f"data={spec.data!r} is streamed through Ray Data: train it with zoo.train")
        return StreamData(shard, spec, rank, world, state, start, counter)
    if spec.data == "builtin:digits":
        from zoo.data import digits

        images, labels = digits.load("train")
        return InMemoryData({"image": images, "label": labels}, spec, rank, world)
    return InMemoryData(read_tensor_file(spec.data), spec, rank, world)
