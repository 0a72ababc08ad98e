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


def one_time(t: Tensor) -> bool:
    """The rows of per-row times ``t`` (B,) share one time by construction: a scalar expanded to
    (B,), as a grid loop passes it (stride 0)."""
    return t.ndim == 1 and t.shape[0] > 1 and t.stride(0) == 0


def per_time(fn, t: Tensor):
    """``fn(t)`` for per-row times ``t`` (B,); computed once when the rows share one time
    (:func:`one_time`), and expanded back. ``fn`` returns a tensor of shape (B,) or a tuple of them."""
    if one_time(t):
        out = fn(t[:1])
        return tuple(o.expand(t.shape) for o in out) if isinstance(out, tuple) else out.expand(t.shape)
    return fn(t)
