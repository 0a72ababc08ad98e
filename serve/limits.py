"""Per-model limits: resolved from the ModelSpec and the Limits options when the application is
built (a limit the model cannot honour is an error then, not at request time), and checked on
each request, before it reaches a replica. Every violation names its field; all are reported.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import dataclass
from typing import Any

from pydantic import TypeAdapter, ValidationError

from components.solvers import SOLVERS, SolverSpec
from serve.batching import Job
from serve.options import Limits
from serve.schemas import MAX_SEED, FieldError, GenerateRequest, ModelInfo, ModelLimits
from zoo.errors import SpecError
from zoo.specs import ModelSpec

_SOLVERS = TypeAdapter(SolverSpec)
CONTINUOUS_MAX_STEPS = 1000
COMPARE_STEPS = (1, 2, 4)  # the LCM paper's step counts: what the page shows for a few-step model


def solver_kinds() -> list[str]:
    """Every solver kind of the zoo (the members of the SolverSpec union)."""
    return sorted(SOLVERS.kinds())


def conditioning(spec: ModelSpec) -> str:
    """What a request may condition on: 'none', 'label' (class-conditional) or 'prompt' (text)."""
    return spec.conditioner.takes


class RequestError(Exception):
    """A request the model does not accept: HTTP ``status`` with one message per bad field."""

    def __init__(self, errors: list[FieldError], status: int = 422):
        self.errors, self.status = errors, status
        super().__init__("; ".join(f"{e.field}: {e.message}" if e.field else e.message for e in errors))


@dataclass(frozen=True)
class ModelRules:
    name: str
    spec: ModelSpec
    limits: ModelLimits

    @classmethod
    def build(cls, name: str, spec: ModelSpec, limits: Limits) -> ModelRules:
        where = f"serving {name!r}: limits"
        chain = getattr(spec.process, "timesteps", None)
        max_steps = limits.max_steps or chain or CONTINUOUS_MAX_STEPS
        if chain is not None and max_steps > chain:
            raise SpecError(f"{where}.max_steps={max_steps} exceeds the {chain} steps of the model's discrete chain")
        if spec.sampling.steps > max_steps:
            raise SpecError(f"{where}.max_steps={max_steps} is below the model's default steps={spec.sampling.steps}")
        known = solver_kinds()
        solvers = sorted(limits.solvers) if limits.solvers is not None else known
        unknown = [s for s in solvers if s not in known]
        if unknown:
            raise SpecError(f"{where}.solvers: unknown solver kinds {unknown}; the zoo has {known}")
        if spec.sampling.solver.kind not in solvers:
            raise SpecError(f"{where}.solvers={solvers} excludes the model's default solver {spec.sampling.solver.kind!r}")
        native = spec.image.size
        sizes = sorted(limits.sizes) if limits.sizes is not None else [native]
        if sizes != [native]:
            raise SpecError(f"{where}.sizes={sizes}: {name} generates only {native}x{native} images (fixed-resolution backbone)")
        resolved = ModelLimits(
            max_n=limits.max_n, max_steps=max_steps, solvers=solvers, sizes=sizes, max_guidance=limits.max_guidance,
            max_prompt_chars=limits.max_prompt_chars, max_body_bytes=limits.max_body_bytes,
            max_nfe_rows=limits.max_nfe_rows, min_tolerance=limits.min_tolerance, timeout_s=limits.timeout_s,
            chunk_images=limits.chunk_images,
        )
        return cls(name, spec, resolved)

    def info(self, route: str, full: bool = False) -> ModelInfo:
        s, kind = self.spec, conditioning(self.spec)
        body = s.model_dump(mode="json")
        return ModelInfo(
            name=self.name, generate=route, conditioning=kind, num_classes=getattr(s.conditioner, "num_classes", None),
            guidance=kind != "none", height=s.image.size, width=s.image.size, channels=s.image.channels,
            default_steps=s.sampling.steps, default_solver=s.sampling.solver.model_dump(mode="json"),
            default_guidance=s.sampling.guidance, limits=self.limits,
            compare_steps=[k for k in COMPARE_STEPS if k <= self.limits.max_steps] if s.sampling.solver.few_step else [],
            spec_sha256=hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16],
            spec=body if full else None,
        )

    def check(self, req: GenerateRequest) -> Job:
        """The request as a Job for a replica (defaults filled in), or a RequestError."""
        s, lim, kind, errs = self.spec, self.limits, conditioning(self.spec), []

        def bad(field: str, message: str) -> None:
            errs.append(FieldError(field=field, message=message))

        if req.n > lim.max_n:
            bad("n", f"n={req.n} exceeds this model's limit max_n={lim.max_n}")
        steps = s.sampling.steps if req.steps is None else req.steps
        if steps > lim.max_steps:
            bad("steps", f"steps={steps} exceeds this model's limit max_steps={lim.max_steps}")
        guidance = s.sampling.guidance if req.guidance is None else req.guidance
        # guidance runs cond and null as one call of 2n rows, except where w is a network input (an LCM)
        rows = req.n * (2 if guidance and not s.guidance_input else 1)
        solver = self._solver(req.solver, bad, rows)
        if solver and steps <= lim.max_steps:
            nfe = _nfe(json.loads(solver), steps)
            if rows * nfe > lim.max_nfe_rows:
                bad("n", f"n={req.n} x NFE={nfe}{' x 2 (guidance)' if rows > req.n else ''} = {rows * nfe} network-evaluation "
                         f"rows exceeds this model's compute budget max_nfe_rows={lim.max_nfe_rows}; ask for fewer images or steps")
        if guidance and kind == "none":
            bad("guidance", f"guidance={guidance} needs a conditional model; {self.name} is unconditional")
        elif guidance > lim.max_guidance:
            bad("guidance", f"guidance={guidance} exceeds this model's limit max_guidance={lim.max_guidance}")
        if req.label is not None:
            n_cls = getattr(s.conditioner, "num_classes", None)
            if kind != "label":
                bad("label", f"{self.name} takes no class label ({_takes(kind)})")
            elif req.label >= n_cls:
                bad("label", f"label={req.label} is outside this model's classes [0, {n_cls})")
        if req.prompt is not None:
            if kind != "prompt":
                bad("prompt", f"{self.name} takes no prompt ({_takes(kind)})")
            elif len(req.prompt) > lim.max_prompt_chars:
                bad("prompt", f"prompt has {len(req.prompt)} characters; this model's limit is {lim.max_prompt_chars}")
        for field in ("height", "width"):
            value = getattr(req, field)
            if value is not None and value not in lim.sizes:
                bad(field, f"{field}={value} is not served; this model generates {' or '.join(f'{z}x{z}' for z in lim.sizes)}")
        if errs:
            raise RequestError(errs)
        seed = secrets.randbelow(MAX_SEED + 1) if req.seed is None else req.seed
        return Job(n=req.n, steps=steps, solver=solver, guidance=float(guidance), seed=seed, label=req.label, prompt=req.prompt)

    def _solver(self, value: str | dict[str, Any] | None, bad, rows: int = 1) -> str:
        """The solver as canonical JSON (so equal solvers batch together). An adaptive solver's
        max_nfe, when not given, is what the compute budget leaves for ``rows``; given, it must fit."""
        lim = self.limits
        if value is None:
            body = self.spec.sampling.solver.model_dump(mode="json")
            if "max_nfe" in body:  # the model's own adaptive default, capped by the budget
                body.pop("max_nfe")
            value = body
        body = {"kind": value} if isinstance(value, str) else dict(value)
        if "max_nfe" in _SOLVER_FIELDS.get(body.get("kind"), ()):
            cap = max(lim.max_nfe_rows // rows, 1)
            if "max_nfe" not in body:
                body["max_nfe"] = max(min(cap, _SOLVER_FIELDS[body["kind"]]["max_nfe"].default), 10)
            elif isinstance(body["max_nfe"], int) and body["max_nfe"] * rows > lim.max_nfe_rows:
                bad("solver.max_nfe", f"max_nfe={body['max_nfe']} x {rows} rows exceeds this model's compute budget "
                                      f"max_nfe_rows={lim.max_nfe_rows} (at most {cap})")
                return ""
        for tol in ("rtol", "atol"):
            v = body.get(tol)
            if isinstance(v, float | int) and not isinstance(v, bool) and tol in _SOLVER_FIELDS.get(body.get("kind"), ()) \
                    and v < lim.min_tolerance:
                bad(f"solver.{tol}", f"{tol}={v:g} is below this model's limit min_tolerance={lim.min_tolerance:g}")
                return ""
        kind = body.get("kind")
        allowed = ", ".join(self.limits.solvers)
        if kind not in solver_kinds():
            bad("solver", f"unknown solver {kind!r}; this model allows: {allowed}")
            return ""
        if kind not in self.limits.solvers:
            bad("solver", f"solver {kind!r} is not served for {self.name}; allowed: {allowed}")
            return ""
        try:
            spec = _SOLVERS.validate_python(body, strict=True)  # "0.5" is not a number over HTTP
        except ValidationError as e:
            for err in e.errors():
                loc = ".".join(str(p) for p in err["loc"][1:])  # drop the union tag
                bad(f"solver.{loc}" if loc else "solver", err["msg"])
            return ""
        return _canonical(spec.model_dump(mode="json"))


_SOLVER_FIELDS = {m.model_fields["kind"].default: m.model_fields for m in SOLVERS.members()}


def _nfe(solver: dict[str, Any], steps: int) -> int:
    """Network evaluations of one sample: an adaptive solver's max_nfe, else steps x the
    solver's evaluations per step (2 for Heun-type second-order steps, 1 otherwise)."""
    if "max_nfe" in solver:
        return int(solver["max_nfe"])
    model = _SOLVERS.validate_python(solver)
    return steps * int(getattr(model, "evals_per_step", 1))


def _canonical(body: dict[str, Any]) -> str:
    return json.dumps(body, sort_keys=True)


def _takes(kind: str) -> str:
    return {"none": "it is unconditional", "label": "it is class-conditional: pass label", "prompt": "it is text-conditioned: pass prompt"}[kind]
