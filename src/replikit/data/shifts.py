"""Domain shifts: parameterized, seeded functions from source inputs to target-domain inputs.

The target domain of the small-scale DANN experiment is MNIST-1D with *clutter*: every signal gets
its own smooth random background (a sum of a few low-frequency sinusoids with random amplitudes,
frequencies and phases) and an amplitude change. It plays the role that MNIST-M plays for MNIST in
Ganin et al. (2016): the digit shapes are unchanged and the label is still readable, but every example
carries nuisance structure, drawn afresh per example, that the source domain never shows (MNIST-M
blends each digit with a random colour patch cut from photographs).

Every function is pure: same inputs and seed, same output; the inputs are never modified.
"""

from __future__ import annotations

import numpy as np


def smooth_background(
    n: int, length: int, seed: int, n_waves: int = 3, max_cycles: float = 2.0
) -> np.ndarray:
    """``n`` smooth random curves of ``length`` samples, each of unit root-mean-square.

    Each curve is ``sum_k a_k sin(2 pi f_k t / length + phi_k)`` with ``a_k ~ N(0, 1)``,
    ``f_k ~ U(0.25, max_cycles)`` cycles per signal and ``phi_k ~ U(0, 2 pi)``, then scaled to unit RMS so
    that the shift strength is a signal-to-clutter ratio independent of ``n_waves``.
    """
    if n_waves < 1:
        raise ValueError(f"n_waves = {n_waves}: need at least one wave")
    if not max_cycles > 0.25:
        raise ValueError(f"max_cycles = {max_cycles}: must exceed 0.25")
    rng = np.random.default_rng(seed)
    t = np.arange(length, dtype=np.float64)[None, None, :]
    amp = rng.standard_normal((n, n_waves, 1))
    freq = rng.uniform(0.25, max_cycles, (n, n_waves, 1))
    phase = rng.uniform(0.0, 2.0 * np.pi, (n, n_waves, 1))
    curves = (amp * np.sin(2.0 * np.pi * freq * t / length + phase)).sum(1)
    rms = np.sqrt((curves**2).mean(1, keepdims=True))
    return curves / np.maximum(rms, 1e-8)


def clutter_shift(
    x: np.ndarray,
    seed: int,
    strength: float = 1.0,
    amplitude: float = 1.0,
    n_waves: int = 3,
    max_cycles: float = 2.0,
) -> np.ndarray:
    """The cluttered target domain: ``amplitude * x + strength * std(x) * background``.

    x: (N, L) float signals (MNIST-1D: L = 40, unit standard deviation overall).
    strength: root-mean-square of the background relative to the signals' standard deviation
        (0 with amplitude 1 returns ``x`` unchanged).
    amplitude: gain applied to the signals themselves (an amplitude change of the domain).
    The background of example i depends on (seed, i) only: the same seed gives the same target set.
    """
    x = np.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"clutter_shift expects (N, L) signals, got shape {x.shape}")
    if strength < 0 or amplitude <= 0:
        raise ValueError(f"strength = {strength} must be >= 0 and amplitude = {amplitude} > 0")
    background = smooth_background(len(x), x.shape[1], seed, n_waves, max_cycles)
    scale = float(x.std()) if x.size else 1.0
    return (amplitude * x + strength * scale * background).astype(x.dtype, copy=False)


def rotate_2d(points: np.ndarray, degrees: float, center: np.ndarray | None = None) -> np.ndarray:
    """Rotate 2-D points counter-clockwise by ``degrees`` about ``center`` (default: their mean).

    The target domain of the paper's two-moons toy is the source rotated by 35 degrees.
    """
    points = np.asarray(points, dtype=np.float64)
    c = points.mean(0) if center is None else np.asarray(center, dtype=np.float64)
    th = np.deg2rad(degrees)
    rot = np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])
    return (points - c) @ rot.T + c
