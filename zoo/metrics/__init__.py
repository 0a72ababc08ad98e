"""Metrics: Frechet distance of features, and the digits classifier whose features it uses."""

from zoo.metrics.frechet import frechet_distance, gaussian_stats

__all__ = ["frechet_distance", "gaussian_stats"]
