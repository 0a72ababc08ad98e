"""Metrics: Frechet distance of features (and the digits classifier whose features it uses),
sliced Wasserstein distance of point clouds, straightness of a flow."""

from zoo.metrics.frechet import frechet_distance, gaussian_stats
from zoo.metrics.sliced_wasserstein import sliced_wasserstein
from zoo.metrics.straightness import straightness

__all__ = ["frechet_distance", "gaussian_stats", "sliced_wasserstein", "straightness"]
