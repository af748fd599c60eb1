"""Label noise."""

from __future__ import annotations

import numpy as np


def symmetric_noise(y: np.ndarray, rate: float, n_classes: int, seed: int) -> np.ndarray:
    """Symmetric label noise as in the ELR paper (Liu et al. 2020) and its official code.

    Each label is, with probability ``rate``, replaced by a class drawn uniformly from *all*
    ``n_classes`` classes, the true one included: the expected fraction of wrong labels is therefore
    ``rate * (n_classes - 1) / n_classes`` (36% at rate 0.4 with 10 classes).
    """
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"noise rate {rate} outside [0, 1]")
    rng = np.random.default_rng(seed)
    flip = rng.random(len(y)) < rate
    noisy = y.copy()
    noisy[flip] = rng.integers(0, n_classes, flip.sum())
    return noisy
