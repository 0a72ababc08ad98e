"""Evaluation: ``zoo.evaluate`` (metric x solver x NFE tables), its planning, sampling and results."""

from zoo.evaluation.evaluate import evaluate
from zoo.evaluation.table import Evaluation

__all__ = ["Evaluation", "evaluate"]
