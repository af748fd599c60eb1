"""Rotation by multiples of 90 degrees as a self-supervised signal (shared by ``sla`` and ``rotnet``;
``data_diet`` borrows its CIFAR crop-and-flip augmentation for the full profile).

Conventions used throughout:

- ``rotate(x, k)`` turns images ``(..., H, W)`` by k * 90 degrees (``torch.rot90`` over the last two
  dimensions: exact, lossless, no interpolation artifacts; 4 turns = identity).
- ``rotate_all(x)`` builds the rotated batch **rotation-major**: rows ``[x_0; x_1; x_2; x_3]`` where
  ``x_k = rotate(x, k)``, with rotation labels ``[0]*B + [1]*B + ...``. The labels of the original batch
  are therefore repeated with ``y.repeat(n_rot)``.
- joint (class x rotation) labels are ``y * n_rot + k`` (class-major: the joint logits of class i are
  columns ``i*n_rot .. i*n_rot + n_rot - 1``), as in Lee et al. (2020).
"""

from __future__ import annotations

import numpy as np
import torch

N_ROT = 4


def rotate(x: torch.Tensor, k: int) -> torch.Tensor:
    """``x`` turned by ``k`` quarter turns over its last two (spatial) dimensions."""
    return torch.rot90(x, k % 4, dims=(-2, -1))


def rotate_all(x: torch.Tensor, n_rot: int = N_ROT) -> tuple[torch.Tensor, torch.Tensor]:
    """The rotation-major batch of all ``n_rot`` rotations of ``x`` and its rotation labels."""
    if not 1 <= n_rot <= 4:
        raise ValueError(f"n_rot={n_rot}: between 1 and 4 quarter turns")
    xs = torch.cat([rotate(x, k) for k in range(n_rot)])
    ks = torch.arange(n_rot, device=x.device).repeat_interleave(len(x))
    return xs, ks


def joint_labels(y: torch.Tensor, k: torch.Tensor, n_rot: int = N_ROT) -> torch.Tensor:
    """Joint (class, rotation) label ``y * n_rot + k``."""
    return y * n_rot + k


def split_joint(j: torch.Tensor, n_rot: int = N_ROT) -> tuple[torch.Tensor, torch.Tensor]:
    """Inverse of :func:`joint_labels`: (class, rotation)."""
    return j // n_rot, j % n_rot


def single_logits(joint: torch.Tensor, k: int = 0, n_rot: int = N_ROT) -> torch.Tensor:
    """Class logits read from the joint logits of inputs known to be rotated by ``k`` (SLA+SI: k = 0)."""
    return joint[:, k::n_rot]


def aggregate_joint(joint_per_rot: torch.Tensor, n_rot: int = N_ROT) -> torch.Tensor:
    """SLA+AG: ``z_i = 1/M sum_k z_{(i,k)}(rotate(x, k))``.

    ``joint_per_rot``: (n_rot, B, C * n_rot), the joint logits of each rotated copy of the batch.
    Returns the aggregated class logits (B, C); their softmax is the aggregated prediction.
    """
    if joint_per_rot.shape[0] != n_rot:
        raise ValueError(f"expected {n_rot} rotated copies, got {joint_per_rot.shape[0]}")
    return torch.stack([single_logits(joint_per_rot[k], k, n_rot) for k in range(n_rot)]).mean(0)


def aggregate_plain(logits_per_rot: torch.Tensor) -> torch.Tensor:
    """Test-time average of plain class logits over the rotated copies (for DA / MT models)."""
    return logits_per_rot.mean(0)


@torch.no_grad()
def logits_per_rotation(model: torch.nn.Module, x: torch.Tensor, n_rot: int = N_ROT, batch_size: int = 4096):
    """(n_rot, N, out): ``model``'s logits on every rotation of ``x`` (eval mode, large batches)."""
    from replikit.train import predict

    return torch.stack([predict(model, rotate(x, k), batch_size) for k in range(n_rot)])


def stratified_subset(
    y: np.ndarray, per_class: int | None = None, fraction: float | None = None, seed: int = 0
) -> np.ndarray:
    """Sorted indices of ``per_class`` examples (or ``fraction`` of them) of every class, drawn at random."""
    if (per_class is None) == (fraction is None):
        raise ValueError("give exactly one of per_class, fraction")
    rng = np.random.default_rng(seed)
    out = []
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        n = per_class if per_class is not None else max(1, round(fraction * len(idx)))
        if n > len(idx):
            raise ValueError(f"class {c} has {len(idx)} examples, {n} requested")
        out.append(rng.choice(idx, n, replace=False))
    return np.sort(np.concatenate(out))
