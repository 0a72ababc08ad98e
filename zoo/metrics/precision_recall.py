"""Improved precision and recall (Kynkaanniemi et al. 2019, eqs. 1-3): each set's manifold is
the union of balls around its points with radius the distance to the point's k-th nearest
neighbour in the same set (k = 3, as the paper and torch-fidelity / EDM's tools use).

    precision = fraction of generated points inside the real manifold  (fidelity)
    recall    = fraction of real points inside the generated manifold  (coverage)
"""

from __future__ import annotations

import numpy as np
import torch


def _radii(x: torch.Tensor, k: int, chunk: int) -> torch.Tensor:
    out = []
    for i in range(0, len(x), chunk):
        d = torch.cdist(x[i : i + chunk], x)
        out.append(d.kthvalue(k + 1, dim=1).values)  # +1: the point itself is at distance 0
    return torch.cat(out)


def _covered(query: torch.Tensor, ref: torch.Tensor, radii: torch.Tensor, chunk: int) -> float:
    inside = []
    for i in range(0, len(query), chunk):
        d = torch.cdist(query[i : i + chunk], ref)
        inside.append((d <= radii[None]).any(1))
    return torch.cat(inside).double().mean().item()


def precision_recall(real: np.ndarray, fake: np.ndarray, k: int = 3, chunk: int = 1024) -> tuple[float, float]:
    """(precision, recall) of generated features ``fake`` against real features ``real``."""
    r, f = torch.as_tensor(np.asarray(real), dtype=torch.float64), torch.as_tensor(np.asarray(fake), dtype=torch.float64)
    if r.ndim != 2 or f.ndim != 2 or r.shape[1] != f.shape[1]:
        raise ValueError(f"need (N, D) feature sets of equal D, got {tuple(r.shape)} and {tuple(f.shape)}")
    if min(len(r), len(f)) <= k:
        raise ValueError(f"need more than k={k} points in each set, got {len(r)} real and {len(f)} generated")
    precision = _covered(f, r, _radii(r, k, chunk), chunk)
    recall = _covered(r, f, _radii(f, k, chunk), chunk)
    return precision, recall
