"""Inception Score (Salimans et al. 2016, section 4): IS = exp(E_x KL(p(y|x) || p(y))),
computed on ``splits`` consecutive chunks of the samples (the original code's 10 splits, no
shuffling) and reported as mean and standard deviation over the chunks. With the FID
Inception-v3, p(y|x) = softmax(pool3 @ W) over its 1008 outputs, as the original TensorFlow code
and torch-fidelity compute it; with the digits classifier it is the "digits IS" over 10 classes.
"""

from __future__ import annotations

import numpy as np
from scipy.special import log_softmax


def inception_score(logits: np.ndarray, splits: int = 10) -> tuple[float, float]:
    """(mean, std) of the Inception Score of (N, K) logits over ``splits`` chunks."""
    logits = np.asarray(logits, dtype=np.float64)
    if logits.ndim != 2 or len(logits) < splits:
        raise ValueError(f"need (N >= splits={splits}, K) logits, got shape {logits.shape}")
    scores = []
    for part in np.array_split(logits, splits):
        logp = log_softmax(part, axis=1)
        p = np.exp(logp)
        log_py = np.log(p.mean(0))  # the marginal p(y) of this chunk
        kl = (p * (logp - log_py)).sum(1)
        scores.append(np.exp(kl.mean()))
    return float(np.mean(scores)), float(np.std(scores))
