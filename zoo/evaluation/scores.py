"""The metrics ``zoo.evaluate`` computes, by name. A name is ``<stat>`` on Inception-v3 features
(FID's detector) or ``digits_<stat>`` on the shipped digits classifier's features:

| name | what | better |
|---|---|---|
| ``fid`` / ``digits_fid`` | Frechet distance of features to the reference statistics | lower |
| ``is`` / ``digits_is`` | Inception Score (10 splits) of the detector's class probabilities | higher |
| ``precision`` / ``recall`` (``digits_``...) | improved precision / recall, k = 3 | higher |
| ``digits_accuracy`` | how often the classifier finds the requested label (class-conditional models) or the prompted digit (captioned text models) | higher |
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from zoo.errors import SpecError
from zoo.metrics.frechet import frechet_distance, gaussian_stats
from zoo.metrics.inception_score import inception_score
from zoo.metrics.precision_recall import precision_recall
from zoo.metrics.reference import ReferenceStats

STATS = ("fid", "is", "precision", "recall", "accuracy")
LOWER_IS_BETTER = {"fid"}


@dataclass(frozen=True)
class Metric:
    name: str
    detector: str
    stat: str

    @property
    def lower_is_better(self) -> bool:
        return self.stat in LOWER_IS_BETTER

    @property
    def title(self) -> str:
        text = {"fid": "FID", "is": "IS", "precision": "precision", "recall": "recall", "accuracy": "accuracy"}[self.stat]
        return f"{'digits ' if self.detector == 'digits' else ''}{text} {'(lower is better)' if self.lower_is_better else '(higher is better)'}"


def parse(names: str | list[str]) -> list[Metric]:
    out = []
    for name in [names] if isinstance(names, str) else list(names):
        detector, _, stat = name.rpartition("_")
        detector = detector or "inception"
        if stat not in STATS or detector not in ("inception", "digits") or (stat == "accuracy" and detector != "digits"):
            known = [s for s in STATS if s != "accuracy"] + [f"digits_{s}" for s in STATS]
            raise SpecError(f"unknown metric {name!r}; known: {', '.join(known)}")
        out.append(Metric(name, detector, stat))
    if not out:
        raise SpecError("metric: name at least one metric, e.g. 'fid' or 'digits_fid'")
    return out


def compute(metrics: list[Metric], outputs: dict[str, dict[str, np.ndarray]], refs: dict[str, ReferenceStats],
            labels: list[int] | None) -> dict[str, float | None]:
    """Each metric's value from the detectors' outputs on the samples; None where it does not
    apply (accuracy of an unconditional model)."""
    values: dict[str, float | None] = {}
    pr: dict[str, tuple[float, float]] = {}
    for m in metrics:
        out = outputs[m.detector]
        if m.stat == "fid":
            values[m.name] = frechet_distance(*gaussian_stats(out["features"]), refs[m.detector].mu, refs[m.detector].sigma)
        elif m.stat == "is":
            values[m.name], values[f"{m.name}_std"] = inception_score(out["logits"], splits=min(10, len(out["logits"])))
        elif m.stat in ("precision", "recall"):
            if m.detector not in pr:
                pr[m.detector] = precision_recall(refs[m.detector].features, out["features"])
            values[m.name] = pr[m.detector][0 if m.stat == "precision" else 1]
        elif m.stat == "accuracy":
            k = out["logits"].shape[1]
            ok = labels is not None and max(labels) < k
            values[m.name] = float((out["logits"].argmax(1) == np.asarray(labels)).mean()) if ok else None
    return values
