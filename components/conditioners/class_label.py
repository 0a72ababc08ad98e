"""Class labels as the condition, with label dropout for classifier-free guidance.

cond = {"label": LongTensor (B,)}; the null label is ``num_classes`` (the backbone's extra
embedding row). During training each label is replaced by the null label with probability
``drop_prob`` (Ho & Salimans 2022, Algorithm 1).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, Literal

import torch
from pydantic import Field
from torch import Tensor, nn

from components.random import RandomSource
from components.spec import Spec


class ClassLabelSpec(Spec):
    kind: Literal["class_label"] = "class_label"
    takes: ClassVar[str] = "label"  # what a request conditions on: none, label or prompt
    num_classes: int = Field(gt=1)
    drop_prob: float = Field(0.1, ge=0, le=1, description="label dropout for classifier-free guidance")

    def build(self) -> ClassLabel:
        return ClassLabel(self)


class ClassLabel(nn.Module):
    guidable = True

    def __init__(self, spec: ClassLabelSpec):
        super().__init__()
        self.spec = spec
        self.num_classes = spec.num_classes

    def _check(self, labels: Tensor) -> Tensor:
        labels = torch.as_tensor(labels, dtype=torch.long)
        bad = labels[(labels < 0) | (labels >= self.num_classes)]
        if bad.numel():
            raise ValueError(f"labels must be in [0, {self.num_classes}); got {bad.unique().tolist()}")
        return labels

    def forward(self, batch: dict[str, Any], rng: RandomSource | None = None) -> dict[str, Tensor]:
        """Training condition from a data batch; labels dropped to null with drop_prob."""
        if "label" not in batch:
            raise ValueError("class-conditional training needs a 'label' column in the data")
        labels = self._check(batch["label"])
        if rng is not None and self.spec.drop_prob > 0:
            drop = rng.rand().to(labels.device) < self.spec.drop_prob
            labels = torch.where(drop, torch.full_like(labels, self.num_classes), labels)
        return {"label": labels}

    def request(self, n: int, labels: int | Sequence[int] | Tensor | None = None, prompt: Any = None) -> dict[str, Tensor]:
        """Sampling condition: one label for all n samples, n labels, or None (unconditional)."""
        if prompt is not None:
            raise ValueError("this model is class-conditional: pass labels=, not prompt=")
        if labels is None:
            return self.null(n)
        labels = torch.as_tensor(labels, dtype=torch.long).reshape(-1)
        if labels.numel() == 1:
            labels = labels.expand(n)
        if labels.numel() != n:
            raise ValueError(f"got {labels.numel()} labels for n={n} samples")
        return {"label": self._check(labels)}

    def null(self, n: int) -> dict[str, Tensor]:
        return {"label": torch.full((n,), self.num_classes, dtype=torch.long)}
