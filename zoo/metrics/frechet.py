"""Frechet distance between Gaussians fitted to two feature sets (Heusel et al. 2017, eq. 6):

    d^2 = ||mu_1 - mu_2||^2 + Tr(S_1 + S_2 - 2 (S_1 S_2)^{1/2})

in float64. pytorch-fid and clean-fid take the trace term from scipy's sqrtm(S_1 S_2); for
covariances (symmetric PSD) it equals Tr((A S_1 A)^{1/2}) with A = S_2^{1/2}, since A S_1 A is
similar to S_1 S_2. That needs two symmetric eigendecompositions instead of a Schur
decomposition of a non-symmetric matrix (about 10x faster at 2048-d and exact for singular
covariances, where sqrtm needs pytorch-fid's eps offset). FID is this distance on Inception-v3
pool features; the digits feature-FID on the digits classifier's features.
"""

from __future__ import annotations

import numpy as np


def gaussian_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean, covariance) of (N, D) features; N >= 2."""
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2 or len(f) < 2:
        raise ValueError(f"need (N >= 2, D) features, got shape {f.shape}")
    return f.mean(0), np.cov(f, rowvar=False)


def _psd_sqrt(s: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((s + s.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def trace_sqrt_product(s1: np.ndarray, s2: np.ndarray) -> float:
    """Tr((S_1 S_2)^{1/2}) for symmetric PSD S_1, S_2."""
    a = _psd_sqrt(s2)
    m = a @ s1 @ a
    return float(np.sqrt(np.clip(np.linalg.eigvalsh((m + m.T) / 2), 0, None)).sum())


def frechet_distance(mu1: np.ndarray, s1: np.ndarray, mu2: np.ndarray, s2: np.ndarray) -> float:
    mu1, mu2 = np.atleast_1d(mu1).astype(np.float64), np.atleast_1d(mu2).astype(np.float64)
    s1, s2 = np.atleast_2d(s1).astype(np.float64), np.atleast_2d(s2).astype(np.float64)
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != (len(mu1), len(mu1)):
        raise ValueError(f"shapes differ: mu {mu1.shape} vs {mu2.shape}, sigma {s1.shape} vs {s2.shape}")
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * trace_sqrt_product(s1, s2))
