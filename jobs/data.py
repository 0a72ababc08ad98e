"""Training data as a function of the step: batch k of the run is the same global batch whatever
the number of workers, and worker r takes rows [r B/W, (r+1) B/W) of it. The order is a
permutation seeded by (seed, epoch), so the data position of a run is its step alone.
"""

from __future__ import annotations

import torch
from torch import Tensor

from components.random import RandomSource, derive_seed
from zoo.errors import DataError
from zoo.specs import TrainSpec

BUILTIN = {"builtin:digits"}


class InMemoryData:
    """A dataset small enough to hold in memory (the shipped digits)."""

    def __init__(self, images: Tensor, labels: Tensor, spec: TrainSpec, rank: int, world: int):
        if len(images) < spec.batch_size:
            raise DataError(f"{spec.data}: {len(images)} samples < batch_size {spec.batch_size}")
        self.images, self.labels, self.spec = images, labels, spec
        self.local = spec.batch_size // world
        self.rows = slice(rank * self.local, (rank + 1) * self.local)
        self.per_epoch = len(images) // spec.batch_size
        self._epoch, self._order = -1, None

    def batch(self, step: int) -> dict[str, Tensor]:
        epoch, k = divmod(step, self.per_epoch)
        if epoch != self._epoch:
            g = torch.Generator().manual_seed(derive_seed(self.spec.seed, "data", epoch))
            self._order, self._epoch = torch.randperm(len(self.images), generator=g), epoch
        B = self.spec.batch_size
        idx = self._order[k * B : (k + 1) * B][self.rows]
        images = self.images[idx]
        if self.spec.hflip:
            flip = RandomSource.for_step(self.spec.seed, step, B, self.rows, stream="hflip").rand() < 0.5
            images = torch.where(flip[:, None, None, None], images.flip(-1), images)
        return {"image": images, "label": self.labels[idx]}


def open_data(spec: TrainSpec, rank: int = 0, world: int = 1) -> InMemoryData:
    if spec.data is None:
        raise DataError("no training data: pass data= (a URL of shards, or builtin:digits)")
    if spec.data == "builtin:digits":
        from zoo.data import digits

        images, labels = digits.load("train")
        return InMemoryData(images, labels, spec, rank, world)
    raise DataError(f"data={spec.data!r}: unknown source; built in: {sorted(BUILTIN)}")
