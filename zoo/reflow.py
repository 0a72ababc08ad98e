"""Reflow (Liu et al. 2022, "Flow Straight and Fast", Algorithm 1) and k-step distillation.

    pairs = zoo.flow_pairs(model, 10_000)              # {"noise": eps, "latent": ODE(eps), ["label"]}
    run = zoo.reflow("runs/rf-digits-<hash>")          # pairs -> train 2-rf-digits on them

A trained flow's ODE maps noise eps to x0 = ODE(eps); training a new flow, initialized from the
old one, on the *pairs* (x0, eps) instead of independent couplings rewires it into a straighter
one (k-rectified flow), whose few-step Euler samples are far better. ``distill=k`` trains the
k-step Euler map on the pairs instead (objective rf_distill). Pairs stream from the sampler to
``write_pairs``: one .safetensors of columns read back as an in-memory dataset when small, a
Parquet shard set streamed by Ray Data when large (rf-afhq's 256x256 pairs); every pair is
seeded by its index, so the pairs do not depend on the batch size they were generated with.
"""

from __future__ import annotations

import hashlib
import json
import math
import posixpath
from typing import Any, Iterable, Iterator

import fsspec
import torch
from safetensors.torch import save as st_save
from torch import Tensor
from tqdm.auto import tqdm

from components.denoisers import bind
from components.random import RandomSource, derive_seed
from zoo import catalog
from zoo import checkpoint as ckpt
from zoo.errors import SpecError
from zoo.loading import load
from zoo.model import _GRIDS, _SOLVERS, Model, _component
from zoo.run import Run, train

IN_MEMORY_PAIRS = 2 * 2**30  # bytes of pairs (noise + x0, float32) up to which one .safetensors holds them


def is_deterministic(solver: Any) -> bool:
    """Whether a solver spec integrates the ODE (reflow needs a deterministic coupling)."""
    return bool(solver.deterministic)


def flow_pairs(model: Model, n: int, **kw: Any) -> dict[str, Tensor]:
    """n pairs of standard-normal noise and the model's deterministic ODE solution from it, in the
    space diffusion runs in (``latent``), plus ``label`` for class-conditional models (uniform
    labels, seeded by index). Defaults: the model's own sampler. Keywords as ``iter_pairs``."""
    return _concat(iter_pairs(model, n, **kw))


def _concat(batches: Iterable[dict[str, Tensor]]) -> dict[str, Tensor]:
    """Batches of columns -> one tensor per column."""
    out: dict[str, list[Tensor]] = {}
    for batch in batches:
        for k, v in batch.items():
            out.setdefault(k, []).append(v)
    return {k: torch.cat(v).contiguous() for k, v in out.items()}


@torch.no_grad()
def iter_pairs(
    model: Model,
    n: int,
    *,
    solver: str | dict | Any = None,
    grid: str | dict | Any = None,
    steps: int | None = None,
    seed: int = 0,
    batch_size: int = 256,
    progress: bool = False,
) -> Iterator[dict[str, Tensor]]:
    """``flow_pairs`` a batch at a time (on the CPU), so pairs of any number stream to storage."""
    cfg = model.spec.sampling
    solver_spec = _component(_SOLVERS, solver, "solver") if solver is not None else cfg.solver
    grid_spec = _component(_GRIDS, grid, "grid") if grid is not None else cfg.grid
    if not is_deterministic(solver_spec):
        raise SpecError(f"reflow pairs need a deterministic ODE solver; {solver_spec!r} adds noise")
    steps = cfg.steps if steps is None else steps
    kind = model.spec.conditioner.kind
    if kind not in ("unconditional", "class_label"):
        raise NotImplementedError(f"reflow pairs for a {kind} conditioner (only unconditional and class_label)")
    process, device = model.process, model.device
    ts = grid_spec.build()(process, steps)
    run_solver = solver_spec.build()
    was_training = model.training
    model.eval()
    bar = tqdm(total=n, desc=f"reflow pairs {model.name}", unit="pair", disable=not progress, mininterval=2.0)
    try:
        for start in range(0, n, batch_size):
            idx = range(start, min(n, start + batch_size))
            rng = RandomSource.from_seeds([(derive_seed(seed, "reflow", i), 1) for i in idx], device)
            eps = rng.randn(*model.latent_shape)
            cond = null = None
            batch: dict[str, Tensor] = {}
            if kind == "class_label":
                labels = rng.randint(0, model.conditioner.num_classes)
                batch["label"] = labels.cpu()
                cond = model.conditioner.request(len(idx), labels=labels)
                cond = {k: v.to(device) for k, v in cond.items()}
                if cfg.guidance:
                    null = {k: v.to(device) for k, v in model.conditioner.null(len(idx)).items()}
            fn = bind(model.denoiser, cond, null, cfg.guidance, cfg.clip_x0)
            x0 = run_solver(fn, process, eps * process.prior_std(), ts, rng)
            bar.update(len(idx))
            yield {"noise": eps.float().cpu(), "latent": x0.float().cpu(), **batch}
    finally:
        bar.close()
        model.train(was_training)


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
            f.write(st_save(_concat(batches)))
        fs.mv(partial, path)
        return url
    from jobs.pack import _write_index, _write_shard  # jobs.shards imports zoo: not at module level
    from jobs.shards import ShardIndex

    fs.makedirs(path, exist_ok=True)
    rows: list[dict[str, Any]] = []
    shards, shape, labelled, count = [], None, False, 0

    def flush() -> None:
        shards.append(_write_shard(fs, path, len(shards), rows, labelled, False, latent=True, noise=True))
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
    _write_index(fs, path, ShardIndex(source="reflow pairs", columns=columns, latent_shape=shape,
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
    checkpoint = ckpt.resolve(source)
    model = load(checkpoint)
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
    from jobs.shards import INDEX

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
