"""Augmentation on the device: pure tensor functions of a resident batch, no host sync, no DataLoader.

Each function takes the batch (already on the run's device, sliced from the resident data set by
``train.fit``) and a ``torch.Generator`` on the same device, draws everything it needs there and returns a
new batch of the same shape: the step never waits for the host.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def random_crop_flip(x: torch.Tensor, pad: int, gen: torch.Generator, flip: bool = True) -> torch.Tensor:
    """The standard CIFAR augmentation of a batch (N, C, H, W), each image its own draw: zero-pad by ``pad``,
    take a random H x W window (a translation by up to ``pad`` pixels) and, with ``flip``, mirror it
    left-right with probability 1/2.

    One gather over the padded batch does crop and flip together. Draw order (dx, dy, flip) and result
    are those of the suite's earlier indexing version, so seeded runs are unchanged.
    """
    n, c, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    dx = torch.randint(0, 2 * pad + 1, (n, 1), device=x.device, generator=gen)
    dy = torch.randint(0, 2 * pad + 1, (n, 1), device=x.device, generator=gen)
    cols = torch.arange(w, device=x.device).expand(n, w)
    if flip:
        mirror = torch.rand(n, 1, device=x.device, generator=gen) < 0.5
        cols = torch.where(mirror, w - 1 - cols, cols)
    rows = dy + torch.arange(h, device=x.device)
    index = rows[:, :, None] * (w + 2 * pad) + (dx + cols)[:, None, :]  # (N, H, W) into the padded plane
    out = padded.flatten(2).gather(2, index.view(n, 1, h * w).expand(n, c, h * w))
    return out.view(n, c, h, w)
