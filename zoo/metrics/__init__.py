"""Metrics: Frechet distance, Inception Score, precision/recall of features; the detectors whose
features they use (FID Inception-v3, the digits classifier); reference statistics of datasets;
sliced Wasserstein distance of point clouds, straightness of a flow."""

from zoo.metrics.frechet import frechet_distance, gaussian_stats
from zoo.metrics.inception_score import inception_score
from zoo.metrics.precision_recall import precision_recall
from zoo.metrics.sliced_wasserstein import sliced_wasserstein
from zoo.metrics.straightness import straightness

__all__ = ["frechet_distance", "gaussian_stats", "inception_score", "precision_recall", "sliced_wasserstein", "straightness"]
