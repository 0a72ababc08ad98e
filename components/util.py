"""Small tensor helpers shared by components."""

from __future__ import annotations

import torch
from torch import Tensor


def bcast(v: Tensor, like: Tensor) -> Tensor:
    """Reshape a per-sample vector (B,) or scalar so it broadcasts against ``like`` (B, ...)."""
    v = torch.as_tensor(v, device=like.device)
    if v.ndim == 0:
        v = v.expand(like.shape[0])
    return v.to(like.dtype).reshape(-1, *([1] * (like.ndim - 1)))
