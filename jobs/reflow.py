"""Reflow's jobs: store (noise, x0) pairs as a dataset, then train the next rectified flow (or the
k-step distillation) on them (Liu et al. 2022, Algorithm 1). The pairs come from zoo/pairs.py."""

from __future__ import annotations

import hashlib
import json
import math
import posixpath
from typing import Any, Iterable

import fsspec
from safetensors.torch import save as st_save
from torch import Tensor

from jobs.pack import write_index, write_shard
from jobs.shards import INDEX, ShardIndex
from jobs.train import train
from zoo import catalog
from zoo import checkpoint as ckpt
from zoo.errors import SpecError
from zoo.resolve import load_model, resolve
from zoo.pairs import concat, iter_pairs
from zoo.run import Run

IN_MEMORY_PAIRS = 2 * 2**30  # bytes of pairs (noise + x0, float32) up to which one .safetensors holds them


def write_pairs(pairs: dict[str, Tensor] | Iterable[dict[str, Tensor]], url: str, shard_size: int = 1000) -> str:
    """Store pairs (a dict of columns, or batches of them) as a dataset the training loop reads:
    ``*.safetensors`` is one file of columns that every worker holds in memory (small sets);
    any other URL becomes a Parquet shard set (``jobs/shards.py``: columns latent, noise
    [, label] as float32 bytes) that Ray Data streams, so pairs of any size fit. Either becomes
    visible only when complete (the file under its name, the shard set with its index.json)."""
    batches = [pairs] if isinstance(pairs, dict) else pairs
    fs, path = fsspec.core.url_to_fs(url)
    if url.endswith(".safetensors"):
        partial = path + ".partial"  # an interrupted write is never reused
        with fs.open(partial, "wb") as f:
            f.write(st_save(concat(batches)))
        fs.mv(partial, path)
        return url
    fs.makedirs(path, exist_ok=True)
    rows: list[dict[str, Any]] = []
    shards, shape, labelled, count = [], None, False, 0

    def flush() -> None:
        shards.append(write_shard(fs, path, len(shards), rows, labelled, False, latent=True, noise=True))
        rows.clear()

    for b in batches:
        shape, labelled = list(b["latent"].shape[1:]), "label" in b
        for i in range(len(b["latent"])):
            rows.append({"key": f"pair-{count:09d}", "latent": b["latent"][i].numpy().astype("<f4").tobytes(),
                         "noise": b["noise"][i].numpy().astype("<f4").tobytes(),
                         "label": int(b["label"][i]) if labelled else None})
            count += 1
            if len(rows) == shard_size:
                flush()
    if rows:
        flush()
    columns = ["key", "latent", "noise"] + (["label"] if labelled else [])
    write_index(fs, path, ShardIndex(source="reflow pairs", columns=columns, latent_shape=shape,
                                      latent_dtype="float32", rows=count, shards=shards))
    return url


def default_target(name: str) -> str:
    """rf-X -> 2-rf-X (Liu et al.'s 2-rectified flow); a k-rf entry reflows into itself (k+1-RF)."""
    known = catalog.names()
    if name.startswith("rf-") and f"2-{name}" in known:
        return f"2-{name}"
    if name in known:
        return name
    raise SpecError(f"no catalog entry to reflow {name!r} into: pass into='<catalog name>'")


def reflow(
    source: str,
    *,
    into: str | None = None,
    pairs: int = 10_000,
    solver: str | dict | Any = None,
    grid: str | dict | Any = None,
    sample_steps: int | None = None,
    pair_seed: int = 0,
    pair_batch: int = 256,
    distill: int | None = None,
    sharded: bool | None = None,
    resume: bool = False,
    progress: bool = True,
    **overrides: Any,
) -> Run:
    """Generate ``pairs`` (noise, x0) with the trained flow at ``source`` (a run folder or
    checkpoint URL) using ``solver`` / ``grid`` / ``sample_steps`` (default: the source's own
    sampler), store them, and train ``into`` (default: rf-X -> 2-rf-X) on them, initialized from
    the source's EMA weights. ``distill=k`` trains the k-step distillation (objective rf_distill)
    instead of the next rectified flow. Pairs go to one in-memory .safetensors file up to
    ``IN_MEMORY_PAIRS`` bytes and to streamed Parquet shards beyond (``sharded=`` forces either).
    ``overrides`` (steps=, batch_size=, ...) change the target;
    ``resume=True`` continues (or reuses) an earlier run of the same target on the same pairs."""
    checkpoint = ckpt.resolve(source)  # a trained run folder or checkpoint (not a catalog name)
    model = load_model(resolve(checkpoint))
    target_name = into or default_target(model.name)
    if distill is not None:
        overrides["objective"] = {"kind": "rf_distill", "steps": distill, "pairs_from": model.name}
    target = catalog.get(target_name, **overrides)
    for part in ("autoencoder", "backbone", "process", "denoiser", "conditioner"):
        if getattr(target.model, part) != getattr(model.spec, part):
            raise SpecError(
                f"cannot reflow {model.name} into {target.name}: model.{part} differs "
                f"({getattr(model.spec, part)!r} vs {getattr(target.model, part)!r}); "
                "the new flow starts from the old one's weights"
            )
    key = {"checkpoint": checkpoint, "pairs": pairs, "seed": pair_seed, "steps": sample_steps,
           "solver": None if solver is None else str(solver), "grid": None if grid is None else str(grid)}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
    if sharded is None:
        sharded = pairs * 2 * 4 * math.prod(model.latent_shape) > IN_MEMORY_PAIRS
    url = posixpath.join(target.train.output.rstrip("/"), "reflow-pairs",
                         f"{model.name}-{digest}" + ("" if sharded else ".safetensors"))
    fs, path = fsspec.core.url_to_fs(url)
    if fs.exists(posixpath.join(path, INDEX) if sharded else path):
        if progress:
            print(f"reusing reflow pairs {url}")
    else:
        if sharded and fs.exists(path):
            fs.rm(path, recursive=True)  # an interrupted earlier write (no index.json)
        fs.makedirs(posixpath.dirname(path), exist_ok=True)
        write_pairs(iter_pairs(model, pairs, solver=solver, grid=grid, steps=sample_steps, seed=pair_seed,
                               batch_size=pair_batch, progress=progress), url)
    return train(target, data=url, weights=checkpoint, resume=resume, progress=progress)
