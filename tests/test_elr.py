"""ELR's math on hand-made tensors, and its label noise."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from replikit.data.noise import symmetric_noise
from replikit.methods.elr import elr_loss, elr_regularizer, update_targets


def test_target_update_is_the_temporal_ensemble():
    targets = torch.tensor([[0.5, 0.5], [1.0, 0.0], [0.0, 1.0]])
    probs = torch.tensor([[0.9, 0.1], [0.2, 0.8]])
    update_targets(targets, torch.tensor([0, 2]), probs, beta=0.7)
    assert torch.allclose(targets[0], torch.tensor([0.7 * 0.5 + 0.3 * 0.9, 0.7 * 0.5 + 0.3 * 0.1]))
    assert torch.allclose(targets[1], torch.tensor([1.0, 0.0]))  # not in the batch: untouched
    assert torch.allclose(targets[2], torch.tensor([0.3 * 0.2, 0.7 + 0.3 * 0.8]))


def test_regularizer_value_and_gradient_direction():
    probs = torch.tensor([[0.6, 0.4]], requires_grad=True)
    t = torch.tensor([[0.9, 0.1]])
    reg = elr_regularizer(probs, t)
    assert reg.item() == pytest.approx(math.log(1 - (0.6 * 0.9 + 0.4 * 0.1)))
    reg.backward()
    # d/dp log(1 - <p,t>) = -t / (1 - <p,t>): descending it raises p where the target is large
    assert torch.allclose(probs.grad, -t / (1 - 0.58))


def test_weight_zero_is_plain_cross_entropy_and_leaves_targets():
    logits, labels = torch.randn(4, 3), torch.tensor([0, 1, 2, 0])
    targets = torch.zeros(4, 3)
    loss = elr_loss(logits, labels, targets, torch.arange(4), beta=0.7, weight=0.0)
    assert loss.item() == pytest.approx(F.cross_entropy(logits, labels).item())
    assert targets.abs().sum() == 0
    loss = elr_loss(logits, labels, targets, torch.arange(4), beta=0.7, weight=3.0)
    assert loss.item() < F.cross_entropy(logits, labels).item()  # log(1 - <p,t>) < 0
    assert torch.allclose(targets.sum(1), torch.full((4,), 0.3))


def test_symmetric_noise_redraws_from_all_classes():
    y = np.repeat(np.arange(10), 2000)
    noisy = symmetric_noise(y, 0.4, 10, seed=0)
    wrong = (noisy != y).mean()
    assert wrong == pytest.approx(0.4 * 9 / 10, abs=0.01)  # the true class can be redrawn
    assert np.array_equal(noisy, symmetric_noise(y, 0.4, 10, seed=0))
    assert np.array_equal(symmetric_noise(y, 0.0, 10, seed=0), y)
    with pytest.raises(ValueError):
        symmetric_noise(y, 1.2, 10, seed=0)
