"""A seeded local shuffle buffer over a stream of column blocks (what each training worker does to
its Ray Data stream; Ray Data's own ``local_shuffle_buffer_size`` lost rows and made short
batches with ``drop_last`` when blocks were small, in Ray 2.60).

Blocks (dicts of equal-length numpy columns) go into a buffer; once it holds ``buffer_rows`` +
``batch`` rows, each batch is ``batch`` rows drawn uniformly without replacement from it, and
their slots are refilled from the buffer's tail (O(batch) per batch, whatever the buffer size).
At the end of the stream the rest is drawn the same way; fewer than ``batch`` rows left over are
dropped. ``buffer_rows=0`` batches the stream in order. The same blocks and seed give the same
batches."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np


def shuffled_batches(blocks: Iterable[dict[str, np.ndarray]], batch: int, buffer_rows: int,
                     seed: int | None) -> Iterator[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed) if buffer_rows else None
    buf: dict[str, np.ndarray] | None = None
    n = 0  # rows held
    for block in blocks:
        rows = len(next(iter(block.values()))) if block else 0
        if not rows:
            continue
        buf, n = _append(buf, n, block, rows)
        while n >= (buffer_rows + batch if rng is not None else batch):
            out, n = _draw(buf, n, batch, rng)
            yield out
    while buf is not None and n >= batch:
        out, n = _draw(buf, n, batch, rng)
        yield out


def _append(buf, n: int, block: dict[str, np.ndarray], rows: int):
    if buf is None:
        buf = {k: np.empty((max(2 * rows, 16), *v.shape[1:]), v.dtype) for k, v in block.items()}
    cap = len(next(iter(buf.values())))
    if n + rows > cap:
        grown = max(2 * cap, n + rows)
        buf = {k: np.concatenate([v[:n], np.empty((grown - n, *v.shape[1:]), v.dtype)]) for k, v in buf.items()}
    for k, v in block.items():
        buf[k][n : n + rows] = v
    return buf, n + rows


def _draw(buf: dict[str, np.ndarray], n: int, batch: int, rng) -> tuple[dict[str, np.ndarray], int]:
    if rng is None:  # in order: the first rows, the rest moved to the front
        out = {k: v[:batch].copy() for k, v in buf.items()}
        for v in buf.values():
            v[: n - batch] = v[batch:n]
        return out, n - batch
    idx = rng.choice(n, batch, replace=False)
    out = {k: v[idx] for k, v in buf.items()}
    keep = n - batch
    holes = idx[idx < keep]  # drawn slots below the new end, refilled from the tail's undrawn rows
    tail = np.setdiff1d(np.arange(keep, n), idx, assume_unique=True)
    for v in buf.values():
        v[holes] = v[tail]
    return out, keep
