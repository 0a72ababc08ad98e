"""The result of ``zoo.evaluate``: one record per (model, solver, NFE budget), printed as the
seeds' tables (method x NFE -> metric) and saved as CSV, JSON, and PNG plots of metric vs NFE."""

from __future__ import annotations

import csv
import io
import json
import math
import posixpath
from dataclasses import dataclass, field
from typing import Any

import fsspec

from zoo.evaluation.scores import Metric


@dataclass
class Evaluation:
    records: list[dict[str, Any]]
    metrics: list[Metric]
    budgets: list[int]
    meta: dict[str, Any] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)

    def rows(self) -> list[tuple[str, str]]:
        """(model, solver) in the order they were evaluated."""
        seen: dict[tuple[str, str], None] = {}
        for r in self.records:
            seen[(r["model"], r["solver"])] = None
        return list(seen)

    def value(self, model: str, solver: str, budget: int) -> dict[str, Any] | None:
        for r in self.records:
            if (r["model"], r["solver"], r["nfe_budget"]) == (model, solver, budget):
                return r
        return None

    def table(self, metric: str | Metric | None = None) -> str:
        m = self._metric(metric)
        head = [f"{m.title}; {self.meta.get('n')} samples per cell; reference {self._refs()}",
                "cells: value at NFE <= the column's budget, with the measured NFE in () where it is smaller; - : no step count fits"]
        rows = [["model", "solver", *[f"NFE {b}" for b in self.budgets]]]
        for model, solver in self.rows():
            cells = []
            for b in self.budgets:
                r = self.value(model, solver, b)
                if r is None or r.get("steps") is None:
                    cells.append("-")
                    continue
                v = r.get(m.name)
                text = "n/a" if v is None else (f"{v:.2f}" if m.stat in ("fid", "is") else f"{v:.3f}")
                cells.append(text if r["nfe"] == b else f"{text} ({r['nfe']})")
            rows.append([model, solver, *cells])
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        lines = ["  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in rows]
        rule = "-" * len(lines[0])
        return "\n".join([*head, rule, lines[0], rule, *lines[1:], rule])

    def __str__(self) -> str:
        return "\n\n".join(self.table(m) for m in self.metrics)

    def _metric(self, metric: str | Metric | None) -> Metric:
        if metric is None:
            return self.metrics[0]
        name = metric.name if isinstance(metric, Metric) else metric
        for m in self.metrics:
            if m.name == name:
                return m
        raise KeyError(f"metric {name!r} was not evaluated; evaluated: {[m.name for m in self.metrics]}")

    def _refs(self) -> str:
        refs = self.meta.get("references", {})
        return "; ".join(f"{k} ({v} images)" for k, v in refs.items()) or "-"

    # -- files ------------------------------------------------------------------------------------
    def to_csv(self, url: str) -> str:
        keys: dict[str, None] = {}
        for r in self.records:
            keys.update(dict.fromkeys(r))
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=list(keys))
        w.writeheader()
        for r in self.records:
            w.writerow({k: ("" if v is None else json.dumps(v) if isinstance(v, (dict, list)) else v) for k, v in r.items()})
        return _write(url, buf.getvalue())

    def to_json(self, url: str) -> str:
        body = {"meta": self.meta, "metrics": [m.name for m in self.metrics], "budgets": self.budgets, "records": self.records}
        return _write(url, json.dumps(body, indent=2, default=_json_default))

    def plot(self, url: str, metric: str | Metric | None = None) -> str:
        from zoo.plots import metric_vs_nfe

        m = self._metric(metric)
        lines = {}
        for model, solver in self.rows():
            pts = [(r["nfe"], r[m.name]) for r in self.records
                   if (r["model"], r["solver"]) == (model, solver) and r.get("steps") is not None and r.get(m.name) is not None]
            if pts:
                lines[f"{model} / {solver}" if len({mo for mo, _ in self.rows()}) > 1 else solver] = pts
        title = f"{m.title}, {self.meta.get('n')} samples" + (f" - {self.rows()[0][0]}" if len({mo for mo, _ in self.rows()}) == 1 else "")
        return metric_vs_nfe(lines, url, ylabel=m.title, title=title, log_y=m.stat == "fid")

    def save(self, out: str) -> dict[str, str]:
        """eval.csv, eval.json, eval.txt and <metric>_vs_nfe.png under ``out`` (any fsspec URL)."""
        out = out.rstrip("/")
        files = {"csv": self.to_csv(posixpath.join(out, "eval.csv")),
                 "json": self.to_json(posixpath.join(out, "eval.json")),
                 "txt": _write(posixpath.join(out, "eval.txt"), str(self) + "\n")}
        for m in self.metrics:
            if any(r.get(m.name) is not None for r in self.records):
                files[f"{m.name}_plot"] = self.plot(posixpath.join(out, f"{m.name}_vs_nfe.png"), m)
        self.files.update(files)
        return files


def _json_default(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return str(v)


def _write(url: str, text: str) -> str:
    fs, path = fsspec.core.url_to_fs(url)
    parent = posixpath.dirname(path)
    if parent:
        fs.makedirs(parent, exist_ok=True)
    with fs.open(path, "w") as f:
        f.write(text)
    return url
