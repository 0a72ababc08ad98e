"""The seeds' NFE-vs-FID tables, reproduced at CPU scale on the shipped digits.

Trains the small digits variant of every family the catalog holds at run time (every entry whose
data is ``builtin:digits``, and those trained on reflow pairs of one of them: ddpm/edm/rf/2-rf/
fm-digits, cd/ict/pd-digits (the distilled ones from their trained teachers, zoo.distill); lcm-tiny
as it joins) with the catalog's fixed seeds on the
CPU, then samples each with every solver its process runs at each NFE budget and prints method x
NFE -> digits feature-FID (the digits classifier's 64-d features, against the 360 held-out
digits), plus the accuracy of label-sampled class-conditional models. Writes eval.csv/json/txt,
metric-vs-NFE plots and sample grids under ``--output``; a second run reuses the trained runs
there (``--retrain`` to start afresh).

    python bench/quality_digits.py                         # everything
    python bench/quality_digits.py --only 'ddpm-*' --solvers ddim --nfe 1,2,4,8,16,32,64

Runtime grows with the catalog: entries x (training + solvers x the NFE sum x n). Measured with
ddpm-digits alone (2 solvers x NFE 1..32 x 500 samples) on 2 CPU cores shared with 3 other jobs
(load 5-7): 21 min, of which training 17 min and evaluation 4 min; see README.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

import zoo  # noqa: E402
from zoo.data import digits  # noqa: E402
from zoo.metrics import detectors  # noqa: E402
from zoo.metrics.frechet import frechet_distance, gaussian_stats  # noqa: E402
from zoo.metrics.reference import reference  # noqa: E402


def teacher_of(name: str) -> str | None:
    """The catalog entry a distilled entry names as its teacher (cd-digits: edm-digits)."""
    return getattr(zoo.get(name).train.objective, "teacher", None)


def digits_entries(pattern: str) -> list[str]:
    """Entries trained on the shipped digits, and those trained on pairs made by one of them
    (2-rf-digits: reflow of rf-digits), each after its source; distilled entries (cd-, pd-digits)
    after their teachers, which are trained even when the pattern leaves them out."""
    names = [n for n in zoo.list(pattern) if zoo.get(n).train.data == "builtin:digits"]
    for n in list(names):
        t = teacher_of(n)
        if t and t not in names and t in zoo.list():
            names.insert(0, t)
    names.sort(key=lambda n: teacher_of(n) in names)  # stable: teachers first
    for n in zoo.list(pattern):
        source = getattr(zoo.get(n).train.objective, "pairs_from", None)
        if zoo.get(n).train.data is None and source in names:
            names.append(n)
    return names


def reflow_or_reuse(name: str, source: zoo.Run, output: str, retrain: bool) -> zoo.Run:
    """``name`` trained on reflow pairs of the trained ``source`` (pairs are reused when present)."""
    if not retrain:
        try:
            return zoo.reflow(source.dir, into=name, resume=True, progress=False, output=output)
        except zoo.SpecError:  # no earlier run on these pairs
            pass
    return zoo.reflow(source.dir, into=name, progress=False, output=output)


def train_or_reuse(name: str, output: str, retrain: bool) -> zoo.Run:
    """The catalog entry trained with its own seed on the CPU (an existing complete run is reused)."""
    if not retrain:
        try:
            return zoo.train(name, output=output, resume=True, device="cpu")
        except zoo.SpecError:  # no earlier run of this spec
            pass
    return zoo.train(name, output=output, device="cpu")


def real_floor(n: int) -> float:
    """digits-FID of n real training digits against the held-out split: the floor at this n."""
    det = detectors.get("digits")
    images = detectors.to_uint8((digits.load("train")[0][:n] + 1) / 2)
    ref = reference("builtin:digits", det, progress=False)
    return frechet_distance(*gaussian_stats(det(images)["features"]), ref.mu, ref.sigma)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", default="*", help="glob over catalog names (default: every digits entry)")
    p.add_argument("--nfe", default="1,2,4,8,16,32", help="NFE budgets")
    p.add_argument("--solvers", default="all", help="'all' (every solver each process runs) or kinds, comma-separated")
    p.add_argument("--n", type=int, default=500, help="samples per cell")
    p.add_argument("--workers", type=int, default=1, help="Ray workers for sampling")
    p.add_argument("--output", default="runs/quality_digits", help="where runs and the report go")
    p.add_argument("--retrain", action="store_true", help="train afresh even if a run exists")
    p.add_argument("--pd-rounds", type=int, default=3, help="chained progressive-distillation rounds (pd entries)")
    args = p.parse_args(argv)
    torch.manual_seed(0)
    t0 = time.perf_counter()

    names = digits_entries(args.only)
    if not names:
        print(f"no catalog entry with data builtin:digits matches {args.only!r}", file=sys.stderr)
        return 2
    print(f"digits entries in the catalog: {', '.join(names)}")
    runs, failed, train_s = {}, {}, {}
    for name in names:
        t = time.perf_counter()
        source = getattr(zoo.get(name).train.objective, "pairs_from", None)
        try:
            if zoo.get(name).train.data is None and source in runs:
                runs[name] = reflow_or_reuse(name, runs[source], args.output, args.retrain)
            elif teacher_of(name) in runs:  # distilled (cd, pd): from the trained teacher's run
                rounds = args.pd_rounds if zoo.get(name).train.objective.kind == "pd" else 1
                runs[name] = zoo.distill(runs[teacher_of(name)].dir, into=name, rounds=rounds, output=args.output,
                                         resume=not args.retrain, progress=False, device="cpu")
            else:
                runs[name] = train_or_reuse(name, args.output, args.retrain)
        except zoo.ZooError as e:  # e.g. a distilled entry whose teacher is not there
            failed[name] = str(e).splitlines()[0]
            print(f"[skip] {name}: {failed[name]}", file=sys.stderr)
            continue
        train_s[name] = round(time.perf_counter() - t, 1)
        print(f"[train] {name}: {train_s[name]} s -> {runs[name].checkpoint}")
    if not runs:
        return 1

    t = time.perf_counter()
    models = {name: zoo.load(r.checkpoint) for name, r in runs.items()}
    conditional = any(getattr(m.conditioner, "num_classes", None) for m in models.values())
    metrics = ["digits_fid", "digits_accuracy"] if conditional else ["digits_fid"]
    solvers = "all" if args.solvers == "all" else args.solvers.split(",")
    nfe = [int(x) for x in args.nfe.split(",")]
    report = os.path.join(args.output, "report")
    parts = []
    for name, model in models.items():  # one at a time, so one entry that cannot be sampled stops only itself
        try:
            # against the held-out digits for all: a reflowed entry's training data is its pairs
            parts.append(zoo.evaluate(model, metric=metrics, nfe=nfe, solvers=solvers, n=args.n,
                                      workers=args.workers, out=report, ref="builtin:digits"))
        except (zoo.ZooError, ValueError) as e:
            failed[name] = f"evaluation: {str(e).splitlines()[0]}"
            print(f"[skip] {name}: {failed[name]}", file=sys.stderr)
    if not parts:
        return 1
    ev = zoo.Evaluation([r for p in parts for r in p.records], parts[0].metrics, parts[0].budgets,
                        {**parts[0].meta, "skipped_solvers": [s for p in parts for s in p.meta["skipped_solvers"]],
                         "seconds": round(sum(p.meta["seconds"] for p in parts), 1)},
                        {k: v for p in parts for k, v in p.files.items()})
    ev.save(report)
    eval_s = round(time.perf_counter() - t, 1)
    floor = real_floor(min(args.n, 1437))

    print()
    print(ev)
    print(f"\nfloor: {min(args.n, 1437)} real training digits vs the held-out split: digits-FID {floor:.2f}")
    for line in ev.meta.get("skipped_solvers", []):
        print(f"solver not run: {line}")
    for name, why in failed.items():
        print(f"entry left out: {name}: {why}")
    total = round(time.perf_counter() - t0, 1)
    print(f"\nruntime: {total} s (training {sum(train_s.values()):.0f} s: {train_s}; evaluation {eval_s} s) "
          f"on {torch.get_num_threads()} CPU threads")
    for what, url in ev.files.items():
        print(f"{what + ':':32s} {url}")
    summary = {"runtime_s": total, "train_s": train_s, "eval_s": eval_s, "floor": floor, "failed": failed}
    Path(args.output, "report", "runtime.json").write_text(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
