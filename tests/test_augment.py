"""Device augmentation: crop and flip as a pure tensor function, pinned draws, no host sync."""

from typing import ClassVar

import pytest
import torch
from torch.overrides import TorchFunctionMode

from replikit.data.augment import random_crop_flip


def reference_crop_flip(x, pad, gen):
    """The plain-indexing version it replaced (same draws: dx, dy, then the flips)."""
    n, _, h, w = x.shape
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    flip = torch.rand(n, generator=gen) < 0.5
    out = torch.stack([padded[i, :, dy[i] : dy[i] + h, dx[i] : dx[i] + w] for i in range(n)])
    return torch.where(flip[:, None, None, None], out.flip(-1), out)


@pytest.mark.parametrize("pad, shape", [(4, (32, 3, 32, 32)), (1, (9, 1, 8, 8)), (2, (5, 2, 4, 6))])
def test_matches_the_reference_draw_for_draw(pad, shape):
    x = torch.randn(*shape)
    out = random_crop_flip(x, pad, torch.Generator().manual_seed(7))
    assert torch.equal(out, reference_crop_flip(x, pad, torch.Generator().manual_seed(7)))


def test_without_padding_each_image_is_itself_or_its_mirror():
    x = torch.randn(64, 3, 4, 4)
    out = random_crop_flip(x, 0, torch.Generator().manual_seed(0))
    same = [torch.equal(a, b) for a, b in zip(x, out)]
    mirrored = [torch.equal(a.flip(-1), b) for a, b in zip(x, out)]
    assert all(s or m for s, m in zip(same, mirrored)) and any(same) and any(mirrored)
    assert torch.equal(random_crop_flip(x, 0, torch.Generator().manual_seed(0), flip=False), x)


def test_padding_brings_in_zeros_and_keeps_the_layout():
    x = torch.ones(64, 3, 8, 8).contiguous(memory_format=torch.channels_last)
    out = random_crop_flip(x, 2, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.dtype == x.dtype
    assert 0 < (out == 0).float().mean() < 0.5 and set(out.unique().tolist()) == {0.0, 1.0}


class NoHostSync(TorchFunctionMode):
    """Raises on the calls that make the host wait for the device."""

    SYNCS: ClassVar = {
        torch.Tensor.item,
        torch.Tensor.tolist,
        torch.Tensor.__bool__,
        torch.Tensor.cpu,
        torch.Tensor.numpy,
        torch.Tensor.nonzero,
        torch.nonzero,
        torch.Tensor.__int__,
        torch.Tensor.__float__,
    }

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in self.SYNCS:
            raise AssertionError(f"host sync: {func.__name__}")
        return func(*args, **(kwargs or {}))


def test_no_host_sync():
    x = torch.randn(16, 3, 32, 32)
    with NoHostSync():
        random_crop_flip(x, 4, torch.Generator().manual_seed(0))
    with NoHostSync(), pytest.raises(AssertionError, match="host sync"):
        x.sum().item()
