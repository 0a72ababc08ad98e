"""Which solvers run on a model, and how many steps fit an NFE budget.

NFE (network function evaluations) is what the seeds' tables count, and it is not the step count
for every solver: Heun (EDM Alg. 2) evaluates twice per step except the last, multistep methods
once. So the steps for a budget are found by running the solver against a stub denoiser that
only counts calls (no network: microseconds per step), and the NFE reported in the tables is
measured again on the real network while sampling. A budget below a solver's smallest NFE, or
one that gives the same steps as a smaller budget, is skipped (shown as "-").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from pydantic import BaseModel, TypeAdapter, ValidationError

from components.denoisers.base import Prediction
from components.grids import GridSpec
from components.noise.base import NoiseProcess
from components.random import RandomSource
from components.solvers import SOLVERS, SolverSpec
from components.util import bcast
from zoo.catalog import format_errors
from zoo.errors import SpecError

_SOLVERS = TypeAdapter(SolverSpec)
_GRIDS = TypeAdapter(GridSpec)


def solver_kinds() -> list[str]:
    """Every solver kind in the SolverSpec union that builds from its kind alone."""
    return SOLVERS.default_kinds()


def component(adapter: TypeAdapter, value: Any, field: str) -> BaseModel:
    if isinstance(value, BaseModel):
        return value
    try:
        return adapter.validate_python({"kind": value} if isinstance(value, str) else value)
    except ValidationError as e:
        raise SpecError(f"invalid {field} {value!r}:\n{format_errors(e)}") from None


def solver_spec(value: Any) -> BaseModel:
    return component(_SOLVERS, value, "solver")


def grid_spec(value: Any) -> BaseModel:
    return component(_GRIDS, value, "grid")


def label(spec: BaseModel) -> str:
    """``ddim``, or ``ddim(eta=1.0)`` where fields differ from the kind's defaults."""
    fields = spec.model_dump(exclude={"kind"})
    defaults = type(spec)(kind=spec.kind).model_dump(exclude={"kind"}) if _buildable(spec) else {}
    diff = {k: v for k, v in fields.items() if defaults.get(k, object()) != v}
    return spec.kind + (f"({', '.join(f'{k}={v}' for k, v in diff.items())})" if diff else "")


def _buildable(spec: BaseModel) -> bool:
    try:
        type(spec)(kind=spec.kind)
        return True
    except ValidationError:
        return False


def count_nfe(solver: BaseModel, grid: BaseModel, process: NoiseProcess, steps: int) -> int:
    """Denoiser calls of ``solver`` on ``grid`` with ``steps`` steps, counted with a stub."""
    calls = [0]

    def stub(x: torch.Tensor, t: torch.Tensor) -> Prediction:
        calls[0] += 1
        a, s = bcast(process.alpha(t), x), bcast(process.sigma(t), x)
        return Prediction(x, a, s, torch.zeros_like(x), x / s.clamp_min(1e-12))

    rng = RandomSource.from_seed(0, 1)
    ts = grid.build()(process, steps)
    solver.build()(stub, process, process.prior((1, 2, 2), rng), ts, rng)
    return calls[0]


@dataclass(frozen=True)
class Point:
    budget: int
    steps: int | None  # None: skipped
    nfe: int | None  # planned NFE (the stub's count)


def plan(solver: BaseModel, grid: BaseModel, process: NoiseProcess, budgets: list[int]) -> list[Point]:
    """For each NFE budget, the most steps whose NFE fits in it."""
    cache: dict[int, int | None] = {}

    def nfe(s: int) -> int | None:
        if s not in cache:
            try:
                cache[s] = count_nfe(solver, grid, process, s)
            except ValueError:  # e.g. more steps than the discrete chain has
                cache[s] = None
        return cache[s]

    first = nfe(1)  # errors other than ValueError mean the solver cannot run here: raise them
    points, used = [], set()
    for b in sorted(set(budgets)):
        if first is None or first > b:
            points.append(Point(b, None, None))
            continue
        lo, hi = 1, max(1, min(b, process.timesteps or b))  # nfe(s) >= s
        top = nfe(hi)
        if top is not None and top <= b:  # one evaluation per step: no search
            lo = hi
        while lo < hi:  # largest s with nfe(s) <= b
            mid = (lo + hi + 1) // 2
            v = nfe(mid)
            lo, hi = (mid, hi) if v is not None and v <= b else (lo, mid - 1)
        if lo in used:
            points.append(Point(b, None, None))
        else:
            used.add(lo)
            points.append(Point(b, lo, nfe(lo)))
    return points


def supports(solver: BaseModel, grid: BaseModel, process: NoiseProcess) -> str | None:
    """None when the solver runs on this process and grid, else the reason it does not."""
    try:
        count_nfe(solver, grid, process, 1)
    except Exception as e:  # noqa: BLE001  the solver's own error is the reason
        return f"{type(e).__name__}: {e}"
    return None
