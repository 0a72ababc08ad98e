"""Metrics: Frechet distance, Inception Score, precision/recall of features; the detectors whose
features they use (FID Inception-v3, the digits classifier); reference statistics of datasets."""

from zoo.metrics.frechet import frechet_distance, gaussian_stats
from zoo.metrics.inception_score import inception_score
from zoo.metrics.precision_recall import precision_recall

__all__ = ["frechet_distance", "gaussian_stats", "inception_score", "precision_recall"]
