"""Rotation utilities shared by SLA and RotNet, checked on hand-made tensors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from replikit.families import rotation


def test_rotate_quarter_turn_by_hand():
    x = torch.tensor([[1.0, 2.0], [3.0, 4.0]])[None, None]
    # torch.rot90 over (H, W) with k=1: the last column becomes the first row
    assert torch.equal(rotation.rotate(x, 1)[0, 0], torch.tensor([[2.0, 4.0], [1.0, 3.0]]))
    assert torch.equal(rotation.rotate(x, 2)[0, 0], torch.tensor([[4.0, 3.0], [2.0, 1.0]]))
    assert torch.equal(rotation.rotate(x, 3)[0, 0], torch.tensor([[3.0, 1.0], [4.0, 2.0]]))


def test_rotate_group_laws():
    x = torch.randn(3, 2, 5, 5)
    assert torch.equal(rotation.rotate(x, 4), x)
    assert torch.equal(rotation.rotate(rotation.rotate(x, 1), 3), x)
    assert torch.equal(rotation.rotate(x, 2), x.flip(-1).flip(-2))
    assert not torch.equal(rotation.rotate(x, 1), x)


def test_rotate_all_is_rotation_major():
    x = torch.randn(3, 1, 4, 4)
    xs, ks = rotation.rotate_all(x)
    assert xs.shape == (12, 1, 4, 4)
    assert ks.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]
    for k in range(4):
        assert torch.equal(xs[3 * k : 3 * k + 3], rotation.rotate(x, k))
    with pytest.raises(ValueError):
        rotation.rotate_all(x, 5)


def test_joint_labels_and_inverse():
    y, k = torch.tensor([0, 3, 9]), torch.tensor([1, 2, 3])
    j = rotation.joint_labels(y, k)
    assert j.tolist() == [1, 14, 39]
    c, r = rotation.split_joint(j)
    assert c.tolist() == [0, 3, 9] and r.tolist() == [1, 2, 3]


def test_single_logits_picks_rotation_columns():
    joint = torch.arange(8.0)[None]  # 2 classes x 4 rotations: columns (0,0) (0,1) .. (1,3)
    assert rotation.single_logits(joint, 0).tolist() == [[0.0, 4.0]]
    assert rotation.single_logits(joint, 3).tolist() == [[3.0, 7.0]]


def test_aggregate_joint_averages_the_right_rotation_only():
    # 1 example, 2 classes; joint logits of the copy rotated by k. Only entries (i, k) of copy k count.
    per_rot = torch.full((4, 1, 8), 100.0)  # wrong-rotation entries: must be ignored
    right = {0: (1.0, 5.0), 1: (2.0, 6.0), 2: (3.0, 7.0), 3: (4.0, 0.0)}
    for k, (c0, c1) in right.items():
        per_rot[k, 0, 0 * 4 + k] = c0
        per_rot[k, 0, 1 * 4 + k] = c1
    agg = rotation.aggregate_joint(per_rot)
    assert torch.allclose(agg, torch.tensor([[2.5, 4.5]]))  # (1+2+3+4)/4, (5+6+7+0)/4
    with pytest.raises(ValueError):
        rotation.aggregate_joint(per_rot[:3])


def test_aggregate_plain_is_mean():
    per_rot = torch.tensor([[[1.0, 0.0]], [[3.0, 2.0]], [[0.0, 0.0]], [[0.0, 2.0]]])
    assert rotation.aggregate_plain(per_rot).tolist() == [[1.0, 1.0]]


def test_logits_per_rotation_matches_manual():
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(9, 3))
    x = torch.randn(5, 1, 3, 3)
    out = rotation.logits_per_rotation(model, x)
    assert out.shape == (4, 5, 3)
    with torch.no_grad():
        assert torch.allclose(out[1], model(rotation.rotate(x, 1)))


def test_stratified_subset():
    y = np.repeat(np.arange(3), [10, 20, 30])
    idx = rotation.stratified_subset(y, per_class=4, seed=1)
    assert np.bincount(y[idx]).tolist() == [4, 4, 4]
    assert np.all(np.diff(idx) > 0)
    idx = rotation.stratified_subset(y, fraction=0.1, seed=1)
    assert np.bincount(y[idx]).tolist() == [1, 2, 3]
    assert np.array_equal(idx, rotation.stratified_subset(y, fraction=0.1, seed=1))  # deterministic
    with pytest.raises(ValueError):
        rotation.stratified_subset(y, per_class=11, seed=0)
    with pytest.raises(ValueError):
        rotation.stratified_subset(y, per_class=1, fraction=0.5)
