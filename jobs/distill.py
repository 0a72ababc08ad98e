"""``zoo.distill``: a trained model in, a distilled run out (DESIGN.md 2b).

    run = zoo.distill("runs/edm-digits-1a2b", into="cd")          # consistency distillation
    run = zoo.distill("runs/ddpm-digits-3c4d", into="pd", rounds=3)  # progressive, 32 -> 16 -> 8 -> 4 steps
    run = zoo.distill("edm-cifar", weights="s3://b/edm.safetensors", into="cd", data="s3://b/cifar10/")

The teacher is any model reference zoo.resolve takes (a run folder, a checkpoint, a catalog name
with ``weights=``), pinned to its exact weights. ``into`` is a distillation objective of the
registry (every objective spec with a ``distills_into`` trait: cd, ict, pd, ...) or a catalog
entry trained by one. The student's spec is a full catalog-style RunSpec: the catalog entry that
distils this teacher with that objective (its ``objective.teacher`` names the teacher's entry, or,
for an objective without a teacher such as ict, it has the teacher's backbone, process and data),
else one derived from the teacher's own recipe; the pinned teacher is written into it
(``objective.teacher``; ``model.weights`` for an objective that takes no teacher, so the student
starts from the teacher's weights), then ``overrides`` apply. A latent student whose autoencoder
has no weights decodes with its teacher's when the two are the same architecture (lcm-tiny from
an ldm-tiny run: the run's fitted KL-VAE), as LCD students share their teacher's VAE. It trains
with ``zoo.train`` (Ray Train, resumable) and serves with ``zoo.serve`` like any run.

Progressive distillation chains rounds (Salimans & Ho 2022, Algorithm 2): with ``rounds=R`` and
the entry's ``objective.steps = N`` (the final student's steps), round r = 1..R trains an
N 2^(R-r)-step student from the previous round's (round 1: from the teacher), each a run folder of
its own that ``resume=True`` continues or reuses.
"""

from __future__ import annotations

from typing import Any

from components.objectives import OBJECTIVES
from jobs.train import train
from zoo import catalog
from zoo.errors import CheckpointError, SpecError
from zoo.resolve import Resolved, is_catalog_name, resolve
from zoo.run import Run, local_absolute
from zoo.specs import RunSpec


def distillation_kinds() -> list[str]:
    """The registry's distillation objectives: the kinds whose spec says what its student is."""
    return [m.model_fields["kind"].default for m in OBJECTIVES.members() if getattr(m, "distills_into", None)]


def distill(
    teacher: str,
    *,
    into: str,
    rounds: int = 1,
    weights: str | None = None,
    resume: bool = False,
    progress: bool = True,
    device: str | None = None,
    address: str | None = None,
    **overrides: Any,
) -> Run:
    """Distil ``teacher`` into a new run with the objective (or catalog entry) ``into``; the
    returned Run is the last round's, with the earlier rounds in ``run.rounds``."""
    if not isinstance(rounds, int) or rounds < 1:
        raise SpecError(f"rounds={rounds!r}: a positive number of progressive-distillation rounds")
    local = isinstance(teacher, str) and not is_catalog_name(teacher)
    r = resolve(local_absolute(teacher) if local else teacher, weights=weights)  # Ray workers run elsewhere
    final = with_teacher_autoencoder(student_spec(r, into, overrides), r)
    if rounds > 1 and "steps" not in type(final.train.objective).model_fields:
        raise SpecError(f"rounds={rounds}: {final.train.objective.kind} has no step count to halve per round; "
                        "chained rounds are progressive distillation (into='pd')")
    done: list[Run] = []
    ref = pinned(r)
    for k in range(rounds):
        halves = "steps" in type(final.train.objective).model_fields
        spec = round_spec(final, rounds, k) if halves else final
        spec = with_teacher(spec, *ref)
        run = _train(spec, resume, progress, device, address)
        done.append(run)
        ref = (run.checkpoint, None)  # the next round's teacher: this student, pinned
    last = done[-1]
    last.rounds = done[:-1]
    return last


def _train(spec: RunSpec, resume: bool, progress: bool, device: str | None, address: str | None) -> Run:
    if resume:
        try:
            return train(spec, resume=True, progress=progress, device=device, address=address)
        except SpecError as e:
            if "no run of" not in str(e):  # a run of this spec to continue does not exist yet: start it
                raise
    return train(spec, progress=progress, device=device, address=address)


def pinned(r: Resolved) -> tuple[str, str | None]:
    """(teacher reference, teacher weights) naming exactly the resolved weights."""
    if r.checkpoint is not None:
        return r.checkpoint, None
    if r.weights is None:
        raise CheckpointError(f"teacher {r.ref!r} has no weights: pass weights='<URL>' (nothing is downloaded), "
                              "or distil a trained run folder or checkpoint")
    if r.run is None:  # a diffusers-layout folder carries its weights
        return r.weights, None
    return r.name, r.weights


def student_spec(r: Resolved, into: str, overrides: dict[str, Any]) -> RunSpec:
    """The student's full spec, before the teacher is written in (see the module docstring)."""
    kinds = distillation_kinds()
    entries = catalog.entries()
    if into in entries:
        entry = entries[into]
        if entry.train.objective.kind not in kinds:
            raise SpecError(f"into={into!r}: that entry trains with {entry.train.objective.kind}, "
                            f"not a distillation objective ({', '.join(kinds)})")
    elif into in kinds:
        entry = matching_entry(into, r, entries) or derived_entry(into, r)
    else:
        raise SpecError(f"into={into!r}: not a distillation objective ({', '.join(kinds)}) "
                        "nor a catalog entry trained by one")
    if hasattr(entry.train.objective, "check_sampling") and "objective.steps" in overrides:
        # the student samples in the steps it is distilled to (pd): objective.steps sets both
        overrides = {"sampling.steps": overrides["objective.steps"], **overrides}
    return catalog.apply_overrides(entry, overrides)


def with_teacher_autoencoder(spec: RunSpec, r: Resolved) -> RunSpec:
    """The student with the teacher's autoencoder weights, when it has none of its own and the
    architectures agree (every field but weights and the fitting recipe)."""
    mine, theirs = spec.model.autoencoder, r.spec.autoencoder
    if "weights" not in type(mine).model_fields or mine.weights is not None or getattr(theirs, "weights", None) is None:
        return spec  # no weights to take (an identity autoencoder), its own, or none to give
    recipe = {"weights", "train"}
    if mine.model_dump(exclude=recipe) != theirs.model_dump(exclude=recipe):
        return spec
    return catalog.apply_overrides(spec, {"autoencoder.weights": theirs.weights})


def matching_entry(into: str, r: Resolved, entries: dict[str, RunSpec]) -> RunSpec | None:
    """The catalog entry distilling this teacher with ``into``: its objective names the teacher's
    entry, or (objectives without a teacher) it shares the teacher's backbone, process and data."""
    found = [e for e in entries.values() if e.train.objective.kind == into]
    named = [e for e in found if getattr(e.train.objective, "teacher", None) == r.name]
    if not named and r.run is not None:
        named = [e for e in found if not hasattr(e.train.objective, "teacher")
                 and (e.model.backbone, e.model.process, e.train.data) == (r.spec.backbone, r.spec.process, r.run.train.data)]
    return sorted(named, key=lambda e: e.name)[0] if named else None


def derived_entry(into: str, r: Resolved) -> RunSpec:
    """A student entry made from the teacher's own recipe when the catalog has none: the same
    model, with a consistency parameterization and sampler for consistency students, and the
    objective's defaults (PD: half the teacher's sampling steps on the trailing grid, and an eps
    student's loss in eps space)."""
    if r.run is None:
        raise SpecError(f"{r.ref!r} carries no training recipe to derive a student from: "
                        f"pass into='<catalog entry trained with {into}>'")
    body = r.run.model_dump(mode="json")
    body["name"] = f"{into}-{r.name}"
    body["description"] = f"{r.name} distilled with {into} (derived by zoo.distill from the teacher's recipe)"
    model, objective = body["model"], {"kind": into}
    cls = OBJECTIVES.member(into)
    if cls.distills_into == "consistency":
        sigma_data = model["denoiser"].get("sigma_data", 0.5)
        model["denoiser"] = {"kind": "consistency", "sigma_data": sigma_data}
        model["sampling"].update(solver={"kind": "consistency"}, grid={"kind": "karras"}, steps=1)
    if cls.distills_into == "lcm":  # LCM: the teacher's prediction under the released boundary scalings, w as an input
        if model["denoiser"]["kind"] not in ("eps", "v", "x0"):
            raise SpecError(f"cannot derive an LCM student from {r.ref!r}: its parameterization "
                            f"{model['denoiser']['kind']!r} is not eps, v or x0 prediction")
        model["denoiser"] = {"kind": "lcm", "prediction": model["denoiser"]["kind"]}
        if "time_cond_proj_dim" not in model["backbone"]:
            raise SpecError(f"cannot derive an LCM student from {r.ref!r}: its {model['backbone']['kind']} backbone "
                            "has no guidance-scale embedding (time_cond_proj_dim)")
        model["backbone"]["time_cond_proj_dim"] = model["backbone"]["time_cond_proj_dim"] or 256
        model["sampling"].update(solver={"kind": "lcm"}, grid={"kind": "leading", "offset": 1}, steps=4)
        if "drop_prob" in model["conditioner"]:  # LCD feeds the condition always; w does the guiding
            model["conditioner"]["drop_prob"] = 0.0
    if cls.distills_into == "teacher":  # pd: half the teacher's steps, on the trailing grid
        steps = max(1, model["sampling"]["steps"] // 2)
        objective["steps"] = steps
        objective["weighting"] = cls.student_weighting.get(model["denoiser"]["kind"], cls.model_fields["weighting"].default)
        model["sampling"].update(solver={"kind": "ddim"}, grid={"kind": "trailing"}, steps=steps)
    if "init_from_teacher" in cls.model_fields:
        objective["init_from_teacher"] = True
    body["train"]["objective"] = objective
    try:
        return RunSpec.model_validate(body)
    except Exception as e:
        raise SpecError(f"cannot derive a {into} student from {r.ref!r}: {e}") from None


def round_spec(final: RunSpec, rounds: int, k: int) -> RunSpec:
    """Round k (0-based) of ``rounds``: a student of N 2^(rounds-1-k) steps, N the final one's,
    sampled with as many steps."""
    n = final.train.objective.steps * 2 ** (rounds - 1 - k)
    spec = catalog.apply_overrides(final, {"objective.steps": n, "sampling.steps": n})
    if rounds == 1:
        return spec
    return spec.model_copy(update={"description": f"{final.description} [round {k + 1} of {rounds}: "
                                                  f"{2 * n} -> {n} steps]".strip()})


def with_teacher(spec: RunSpec, ref: str, weights: str | None) -> RunSpec:
    """The spec naming its pinned teacher: in the objective when it takes one, else as the
    student's initial weights (an objective without a teacher, such as ict, starts from it)."""
    if "teacher" in type(spec.train.objective).model_fields:
        return catalog.apply_overrides(spec, {"objective.teacher": ref, "objective.teacher_weights": weights})
    return catalog.apply_overrides(spec, {"model.weights": weights or ref})
