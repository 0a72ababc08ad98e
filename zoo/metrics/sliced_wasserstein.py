"""Sliced Wasserstein-2 distance between two equal-size point clouds (Rabin et al. 2011; Bonneel
et al. 2015): the root mean, over random unit directions, of the squared W2 distance of the 1-D
projections, which for sorted equal-size samples is the mean squared difference of order
statistics. Directions are seeded, so the number is reproducible."""

from __future__ import annotations

import torch
from torch import Tensor


def sliced_wasserstein(a: Tensor, b: Tensor, projections: int = 256, seed: int = 0) -> float:
    a, b = a.flatten(1).double(), b.flatten(1).double()
    if a.shape != b.shape:
        raise ValueError(f"point clouds must have equal shapes, got {tuple(a.shape)} and {tuple(b.shape)}")
    g = torch.Generator().manual_seed(seed)
    theta = torch.randn(a.shape[1], projections, generator=g, dtype=torch.float64)
    theta = (theta / theta.norm(dim=0, keepdim=True)).to(a.device)
    pa, pb = (a @ theta).sort(0).values, (b @ theta).sort(0).values
    return (pa - pb).pow(2).mean().sqrt().item()
