"""Plots people look at, written as PNG next to a run (any fsspec URL): the training loss curve
from ``metrics.jsonl`` and metric-vs-NFE curves of an evaluation. matplotlib, Agg backend."""

from __future__ import annotations

import io
import json
import posixpath

import fsspec


def _figure():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, url: str) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120, bbox_inches="tight")
    _figure().close(fig)
    with fsspec.open(url, "wb") as f:
        f.write(buf.getvalue())
    return url


def read_metrics(run_dir: str) -> list[dict]:
    fs, path = fsspec.core.url_to_fs(posixpath.join(run_dir.rstrip("/"), "metrics.jsonl"))
    if not fs.exists(path):
        return []
    with fs.open(path, "r") as f:
        return [json.loads(line) for line in f if line.strip()]


def loss_curve(run_dir: str, out: str | None = None) -> str | None:
    """``<run>/loss.png``: loss (log scale) and learning rate against the step, from metrics.jsonl;
    None when the run has logged nothing yet."""
    rows = [r for r in read_metrics(run_dir) if "step" in r and "loss" in r]
    if not rows:
        return None
    plt = _figure()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    steps = [r["step"] for r in rows]
    ax.plot(steps, [r["loss"] for r in rows], marker="." if len(rows) < 50 else None, label="loss")
    _log_y(ax)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.grid(alpha=0.3, which="both")
    if any("lr" in r for r in rows):
        ax2 = ax.twinx()
        ax2.plot(steps, [r.get("lr", float("nan")) for r in rows], color="tab:gray", lw=1, ls="--", label="lr")
        ax2.set_ylabel("learning rate", color="tab:gray")
    ax.set_title(posixpath.basename(run_dir.rstrip("/")))
    return _save(fig, out or posixpath.join(run_dir.rstrip("/"), "loss.png"))


def metric_vs_nfe(lines: dict[str, list[tuple[int, float]]], url: str, ylabel: str, title: str = "", log_y: bool = False) -> str:
    """One line per label through its (NFE, value) points, NFE on a log2 axis."""
    plt = _figure()
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, pts in lines.items():
        pts = sorted(pts)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=label)
    from matplotlib.ticker import NullFormatter

    ax.set_xscale("log", base=2)
    pts_x = [p[0] for pts in lines.values() for p in pts]
    if pts_x:  # ticks at the powers of two the points span
        lo, hi = min(pts_x), max(pts_x)
        xs = [2**k for k in range(max(0, lo.bit_length() - 1), hi.bit_length() + 1) if lo <= 2**k <= max(hi, 1)] or [lo]
        ax.set_xticks(xs, [str(x) for x in xs])
        ax.xaxis.set_minor_formatter(NullFormatter())
    if log_y and all(p[1] > 0 for pts in lines.values() for p in pts):
        _log_y(ax)
    ax.set_xlabel("NFE (network evaluations per sample)")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3, which="both")
    if lines:
        ax.legend(fontsize=8)
    return _save(fig, url)



def _log_y(ax) -> None:
    """Log y axis with plain tick labels at 1, 2, 5 x 10^k."""
    from matplotlib.ticker import FormatStrFormatter, LogLocator, NullFormatter

    ax.set_yscale("log")
    ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))
    ax.yaxis.set_minor_formatter(NullFormatter())
