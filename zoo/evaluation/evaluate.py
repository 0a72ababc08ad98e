"""``zoo.evaluate``: the seeds' NFE-vs-FID tables for any model, solver and NFE.

    ev = zoo.evaluate("runs/ddpm-digits-<hash>", metric=["digits_fid", "digits_is"],
                      nfe=[1, 2, 4, 8, 16, 32], solvers=["ddim", "ddpm"], n=1000)
    print(ev)                      # method x NFE -> metric, one table per metric
    ev.records                     # one dict per (model, solver, NFE budget)
    ev.save("eval/")               # eval.csv, eval.json, eval.txt, <metric>_vs_nfe.png

For each model and solver, each NFE budget gets the most solver steps whose network calls fit in
it (zoo.evaluation.plan); the n samples (seeds seed..seed+n-1, shared by every cell) are drawn
in-process or over Ray workers (zoo.evaluation.sampling), quantized to uint8 as images on disk
would be, and scored against the reference statistics of the model's data (zoo.metrics.reference).
"""

from __future__ import annotations

import posixpath
import time
from collections.abc import Sequence
from typing import Any

import torch
from pydantic import BaseModel

from zoo import catalog
from zoo.errors import SpecError
from zoo.evaluation import plan as planning
from zoo.evaluation import scores
from zoo.evaluation.sampling import Job, labels_for, run_jobs
from zoo.evaluation.table import Evaluation
from zoo.images import save_grid
from zoo.resolve import load_model, resolve
from zoo.metrics import detectors
from zoo.metrics.reference import reference
from zoo.model import Model

DEFAULT_NFE = (1, 2, 4, 8, 16, 32)
GRID_SAMPLES = 16  # samples per NFE in the saved grids


def evaluate(
    model: Model | str | Sequence[Model | str],
    metric: str | Sequence[str] = "fid",
    nfe: Sequence[int] = DEFAULT_NFE,
    solvers: str | Sequence[str | dict | BaseModel] | None = None,
    n: int = 1000,
    *,
    grid: str | dict | BaseModel | None = None,
    guidance: float | None = None,
    seed: int = 0,
    ref: str | None = None,
    inception: str | None = None,
    workers: int = 1,
    batch_size: int = 250,
    out: str | None = None,
    progress: bool = True,
    device: str | torch.device | None = None,
) -> Evaluation:
    """Evaluate models at NFE budgets with solvers; return (and print from the CLI) the table.

    model:    a Model, a run / checkpoint URL, a catalog name with weights, or a list of them.
    metric:   'fid', 'is', 'precision', 'recall' (Inception-v3 features: pass ``inception=``
              weights or set $ZOO_INCEPTION) or 'digits_fid', 'digits_is', 'digits_accuracy',
              'digits_precision', 'digits_recall' (the shipped digits classifier); or a list.
    nfe:      NFE budgets (network evaluations per sample; guidance's batched cond+null call is one).
    solvers:  None for each model's own solver, 'all' for every solver kind that runs on its
              process, or a list of kinds / dicts / specs (e.g. {"kind": "ddim", "eta": 1.0}).
    n:        samples per cell (the literature uses 50,000; FID depends on n, compare at equal n).
    ref:      reference data URL or statistics .npz; by default the data the model was trained on
              (its run's or catalog entry's ``train.data``; builtin:digits -> the held-out split).
    workers:  > 1 splits each cell's seeds over that many Ray tasks.
    out:      folder (any fsspec URL) for eval.csv/json/txt, plots and sample grids; by default
              ``<run>/eval`` when a single run / checkpoint URL is evaluated, else nothing is written.
    """
    t0 = time.perf_counter()
    metrics = scores.parse(list(metric) if not isinstance(metric, str) else metric)
    budgets = sorted({int(b) for b in nfe})
    if not budgets or budgets[0] < 1:
        raise SpecError(f"nfe: budgets must be >= 1, got {list(nfe)}")
    if n < 2:
        raise SpecError(f"n must be >= 2 (a covariance needs two samples), got {n}")
    refs_given = [model] if isinstance(model, (Model, str)) else list(model)
    if not refs_given:
        raise SpecError("model: nothing to evaluate")
    resolved = [_resolve(m, device) for m in refs_given]
    models = [r[0] for r in resolved]
    names = _display_names(models)
    if out is None and len(resolved) == 1 and resolved[0][2] is not None:
        out = posixpath.join(resolved[0][2], "eval")
    dev = torch.device(device) if device is not None else models[0].device

    # detectors and references: one per (data, detector)
    dets = {m.detector: detectors.get(m.detector, inception=inception, device=dev) for m in metrics}
    need_features = {m.detector for m in metrics if m.stat in ("precision", "recall")}
    refs: list[dict] = []
    ref_sizes: dict[str, int] = {}
    cache: dict[tuple[str, str], Any] = {}
    for (mdl, data, _), name in zip(resolved, names):
        c, size = mdl.spec.image.channels, mdl.spec.image.size
        for det in dets.values():
            try:
                det.check((c, size, size))
            except ValueError as e:
                raise SpecError(f"{name}: {e}") from None
        url = ref or data
        if url is None and any(m.stat in ("fid", "precision", "recall") for m in metrics):
            raise SpecError(f"{name}: no reference data known; pass ref='<data URL or statistics .npz>'")
        r = {}
        for d, det in dets.items():
            if url is not None and (url, d) not in cache:
                cache[(url, d)] = reference(url, det, features=d in need_features, device=str(dev), progress=progress)
            if url is not None:
                r[d] = cache[(url, d)]
                ref_sizes[r[d].name] = r[d].n
        refs.append(r)

    # the jobs: model x solver x budget
    jobs, records, skipped = [], [], []
    grid_for = {}
    for i, mdl in enumerate(models):
        if guidance and not getattr(mdl.conditioner, "guidable", False):
            raise SpecError(f"guidance={guidance}: {names[i]} is unconditional (leave guidance=None for each model's own)")
        g = planning.grid_spec(grid) if grid is not None else mdl.spec.sampling.grid
        for s in _solvers(mdl, solvers, g, skipped):
            name = planning.label(s)
            grid_for[(names[i], name)] = []
            for p in planning.plan(s, g, mdl.process, budgets):
                rec = {"model": names[i], "solver": name, "grid": g.kind, "nfe_budget": p.budget, "steps": p.steps,
                       "nfe": None, "n": n, "seed": seed,
                       "guidance": mdl.spec.sampling.guidance if guidance is None else guidance,
                       "solver_spec": s.model_dump(mode="json")}
                records.append(rec)
                if p.steps is None:
                    continue
                seeds = list(range(seed, seed + n))
                jobs.append(Job(i, s, g, p.steps, guidance, seeds, labels_for(mdl, seeds, 0), batch_size,
                                key=len(records) - 1, cost=p.nfe))

    # sample, score, keep a few images per cell for the grids
    for drawn in run_jobs(models, jobs, workers=workers, progress=progress):
        rec, job = records[drawn.key], next(j for j in jobs if j.key == drawn.key)
        outputs = {d: det(drawn.images, dev) for d, det in dets.items()}
        rec.update(nfe=drawn.nfe, sample_seconds=round(drawn.seconds, 3),
                   **scores.compute(metrics, outputs, refs[job.model], job.labels))
        rec["ref"] = "; ".join(sorted({st.name for st in refs[job.model].values()})) or None
        grid_for[(rec["model"], rec["solver"])].append(drawn.images[:GRID_SAMPLES])

    meta = {"n": n, "seed": seed, "nfe_budgets": budgets, "workers": workers, "references": ref_sizes,
            "detectors": {d: det.id for d, det in dets.items()}, "skipped_solvers": skipped,
            "seconds": round(time.perf_counter() - t0, 1), "torch": torch.__version__}
    ev = Evaluation(records, metrics, budgets, meta)
    if out is not None:
        ev.save(out)
        for (model_name, solver), parts in grid_for.items():
            if parts:
                url = posixpath.join(out.rstrip("/"), f"samples_{model_name}_{solver}.png".replace("/", "_"))
                ev.files[f"samples {model_name} {solver}"] = save_grid(torch.cat(parts).float() / 255, url, nrow=GRID_SAMPLES)
    return ev


def _resolve(model: Model | str, device) -> tuple[Model, str | None, str | None]:
    """(model, its training data URL, its run folder) of a Model / catalog name / run URL."""
    if isinstance(model, Model):
        entry = catalog.entries().get(model.name)
        return (model if device is None else model.to(device)), (entry.train.data if entry else None), None
    if not isinstance(model, str):
        raise SpecError(f"model: expected a Model, a run/checkpoint URL or a catalog name, got {type(model).__name__}")
    r = resolve(model)
    return load_model(r, device=device or "cpu"), r.run.train.data if r.run is not None else None, r.run_dir


def _display_names(models: list[Model]) -> list[str]:
    """The models' names, numbered where several share one (e.g. two runs of one entry)."""
    total = {m.name: sum(o.name == m.name for o in models) for m in models}
    seen: dict[str, int] = {}
    out = []
    for m in models:
        seen[m.name] = seen.get(m.name, 0) + 1
        out.append(m.name if total[m.name] == 1 else f"{m.name}#{seen[m.name]}")
    return out


def _solvers(model: Model, solvers: Any, grid: BaseModel, skipped: list[str]) -> list[BaseModel]:
    if solvers is None:
        return [model.spec.sampling.solver]
    if solvers == "all":
        out = []
        for kind in planning.solver_kinds():
            s = planning.solver_spec(kind)
            why = planning.supports(s, grid, model.process)
            if why is None:
                out.append(s)
            else:
                skipped.append(f"{model.name}: {kind} ({why})")
        return out
    if isinstance(solvers, (str, dict, BaseModel)):
        solvers = [solvers]
    out = []
    for value in solvers:
        s = planning.solver_spec(value)
        why = planning.supports(s, grid, model.process)
        if why is not None:
            raise SpecError(f"solver {planning.label(s)!r} does not run on {model.name} ({model.process!r}): {why}")
        out.append(s)
    return out
