"""The spec fields of an objective with a frozen teacher (cd, pd, lcd; DESIGN.md 2b), declared once.

``teacher`` is a model reference (a run folder, a checkpoint, or a catalog name with
``teacher_weights``) that the training loop resolves (jobs/teacher.py), never a component.
``teacher_solver`` names the teacher's ODE step: a solver kind with a deterministic one-step form,
checked against the solver registry's traits.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, Field

from components.solvers import SOLVERS


def _one_step(kind: str) -> str:
    spec = SOLVERS.parse(kind)
    if not (spec.has_step and spec.deterministic):
        raise ValueError(f"teacher_solver {kind!r} has no deterministic one-step form")
    return kind


TeacherRef = Annotated[str | None, Field(description="the model reference the loop resolves into the frozen teacher")]
TeacherWeights = Annotated[str | None, Field(description="weights for a catalog-name teacher (never downloaded)")]
TeacherSolver = Annotated[str, AfterValidator(_one_step)]
