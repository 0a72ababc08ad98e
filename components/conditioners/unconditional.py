"""No condition: the backbone gets cond=None, and there is no null condition to guide against."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from torch import nn

from components.random import RandomSource
from components.spec import Spec


class UnconditionalSpec(Spec):
    kind: Literal["unconditional"] = "unconditional"
    takes: ClassVar[str] = "none"  # what a request conditions on: none, label or prompt

    def build(self) -> Unconditional:
        return Unconditional()


class Unconditional(nn.Module):
    guidable = False

    def forward(self, batch: dict[str, Any], rng: RandomSource | None = None) -> None:
        return None

    def request(self, n: int, labels: Any = None, prompt: Any = None) -> None:
        if labels is not None or prompt is not None:
            raise ValueError("this model is unconditional: it takes neither labels nor a prompt")
        return None

    def null(self, n: int) -> None:
        return None
