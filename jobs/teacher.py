"""The frozen teacher of a distillation run (DESIGN.md 2b: the loop resolves ``teacher``, not the
components), through the one model-reference resolver (zoo.resolve)."""

from __future__ import annotations

import torch

from zoo.resolve import load_model
from zoo.model import Model


def load_teacher(ref: str, weights: str | None = None, device: str | torch.device = "cpu") -> Model:
    """A run folder, a checkpoint, or a catalog name (+ weights) as a frozen model in eval mode
    (its EMA weights, which is what it samples with)."""
    model = load_model(ref, weights=weights, device=device)
    model.requires_grad_(False).eval()
    return model
