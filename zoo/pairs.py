"""Reflow pairs (Liu et al. 2022, "Flow Straight and Fast", Algorithm 1): (noise, x0 = ODE(noise)) from a trained flow.

    pairs = zoo.flow_pairs(model, 10_000)              # {"noise": eps, "latent": ODE(eps), ["label"]}
    run = zoo.reflow("runs/rf-digits-<hash>")          # pairs -> train 2-rf-digits on them (jobs/reflow.py)

A trained flow's ODE maps noise eps to x0 = ODE(eps); training a new flow, initialized from the
old one, on the *pairs* (x0, eps) instead of independent couplings rewires it into a straighter
one (k-rectified flow), whose few-step Euler samples are far better. ``distill=k`` trains the
k-step Euler map on the pairs instead (objective rf_distill). Pairs stream from the sampler to
``write_pairs``: one .safetensors of columns read back as an in-memory dataset when small, a
Parquet shard set streamed by Ray Data when large (rf-afhq's 256x256 pairs); every pair is
seeded by its index, so the pairs do not depend on the batch size they were generated with.
"""

from __future__ import annotations

from typing import Any, Iterable, Iterator

import torch
from torch import Tensor
from tqdm.auto import tqdm

from components.random import RandomSource, derive_seed
from zoo.errors import SpecError
from zoo.model import Model


def is_deterministic(solver: Any) -> bool:
    """Whether a solver spec integrates the ODE (reflow needs a deterministic coupling): the
    spec's own trait (components.solvers.base.SolverTraits)."""
    return bool(solver.deterministic)


def flow_pairs(model: Model, n: int, **kw: Any) -> dict[str, Tensor]:
    """n pairs of standard-normal noise and the model's deterministic ODE solution from it, in the
    space diffusion runs in (``latent``), plus ``label`` for class-conditional models (uniform
    labels, seeded by index). Defaults: the model's own sampler. Keywords as ``iter_pairs``."""
    return concat(iter_pairs(model, n, **kw))


def concat(batches: Iterable[dict[str, Tensor]]) -> dict[str, Tensor]:
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
    """``flow_pairs`` a batch at a time (on the CPU), so pairs of any number stream to storage.
    Each batch is sampled by ``Model.solve`` from the noise and labels drawn here."""
    plan = model.plan(steps=steps, solver=solver, grid=grid)
    if not is_deterministic(plan.solver):
        raise SpecError(f"reflow pairs need a deterministic ODE solver; {plan.solver!r} adds noise")
    kind = model.spec.conditioner.kind
    if kind not in ("unconditional", "class_label"):
        raise NotImplementedError(f"reflow pairs for a {kind} conditioner (only unconditional and class_label)")
    process, device = model.process, model.device
    bar = tqdm(total=n, desc=f"reflow pairs {model.name}", unit="pair", disable=not progress, mininterval=2.0)
    try:
        for start in range(0, n, batch_size):
            idx = range(start, min(n, start + batch_size))
            rng = RandomSource.from_seeds([(derive_seed(seed, "reflow", i), 1) for i in idx], device)
            eps = rng.randn(*model.latent_shape)
            batch: dict[str, Tensor] = {}
            labels = None
            if kind == "class_label":
                labels = rng.randint(0, model.conditioner.num_classes)
                batch["label"] = labels.cpu()
            x0 = model.solve(plan, rng, x=eps * process.prior_std(), labels=labels)
            bar.update(len(idx))
            yield {"noise": eps.float().cpu(), "latent": x0.float().cpu(), **batch}
    finally:
        bar.close()
