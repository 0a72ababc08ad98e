"""Reproducible randomness for samplers and objectives.

A :class:`RandomSource` is a list of (generator, rows) groups: each group of rows draws from its
own generator, so a request with seed ``s`` gets the same noise whether it runs alone or
batched with others (the Serve issue relies on this), and a training step draws the *global*
batch's noise from a step-seeded generator and keeps only this worker's rows, so N workers with
B/N rows see exactly the noise one worker with B rows sees.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import torch
from torch import Tensor


def derive_seed(*parts: int | str) -> int:
    """A 63-bit seed mixed from parts (run seed, step, ...), stable across processes."""
    digest = hashlib.sha256(":".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


class RandomSource:
    def __init__(
        self,
        groups: Sequence[tuple[torch.Generator, int] | tuple[torch.Generator, int, slice]],
        rows: slice | None = None,
    ):
        """``groups``: (generator, rows) pairs, or (generator, rows drawn, rows kept) triples: a
        group that draws all ``rows drawn`` of its stream and keeps a slice (a chunk of a large
        request gets exactly the noise of its rows in the whole request)."""
        if not groups:
            raise ValueError("RandomSource needs at least one (generator, rows) group")
        self.groups = [(g[0], g[1], g[2] if len(g) > 2 else slice(0, g[1])) for g in groups]
        self.total = sum(len(range(*keep.indices(n))) for _, n, keep in self.groups)
        self.rows = rows or slice(0, self.total)
        self.n = len(range(*self.rows.indices(self.total)))

    @classmethod
    def from_seed(cls, seed: int, n: int, device: torch.device | str = "cpu") -> RandomSource:
        return cls.from_seeds([(seed, n)], device)

    @classmethod
    def from_seeds(
        cls, seeds: Sequence[tuple[int, ...]], device: torch.device | str = "cpu"
    ) -> RandomSource:
        """One generator per (seed, rows) pair, e.g. one per request in a served batch."""
        groups = []
        for seed, n, *chunk in seeds:  # (seed, rows) or (seed, rows, first row, rows of the whole stream)
            g = torch.Generator(device=torch.device(device))
            g.manual_seed(int(seed))
            if chunk:
                start, whole = int(chunk[0]), int(chunk[1])
                groups.append((g, whole, slice(start, start + int(n))))
            else:
                groups.append((g, int(n)))
        return cls(groups)

    @classmethod
    def for_step(
        cls,
        seed: int,
        step: int,
        global_batch: int,
        rows: slice,
        device: torch.device | str = "cpu",
        stream: str = "train",
    ) -> RandomSource:
        """The randomness of one training step: independent of how many workers share it."""
        g = torch.Generator(device=torch.device(device))
        g.manual_seed(derive_seed(seed, stream, step))
        return cls([(g, global_batch)], rows=rows)

    def _draw(self, fn, shape: Sequence[int], **kw) -> Tensor:
        parts = [fn((n, *shape), generator=g, device=g.device, **kw)[keep] for g, n, keep in self.groups]
        return torch.cat(parts)[self.rows]

    def randn(self, *shape: int, dtype: torch.dtype = torch.float32) -> Tensor:
        """Standard normal noise of shape (rows, *shape)."""
        return self._draw(torch.randn, shape, dtype=dtype)

    def rand(self, *shape: int, dtype: torch.dtype = torch.float32) -> Tensor:
        """Uniform [0, 1) of shape (rows, *shape)."""
        return self._draw(torch.rand, shape, dtype=dtype)

    def randint(self, low: int, high: int, *shape: int) -> Tensor:
        """Integers in [low, high) of shape (rows, *shape)."""
        return self._draw(lambda s, **kw: torch.randint(low, high, s, **kw), shape)
