"""SLA's objectives and inference on hand-made tensors, and its config validation."""

from __future__ import annotations

import math

import numpy as np
import pydantic
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from replikit import config, models
from replikit.families import rotation
from replikit.methods import load_config, sla


class Fixed(nn.Module):
    """A 'network' whose logits are a fixed linear map of the flattened image (hand-checkable)."""

    def __init__(self, in_dim: int, n_out: int, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.w = nn.Parameter(torch.randn(in_dim, n_out, generator=g))

    def forward(self, x):
        return x.flatten(1) @ self.w


def _ce(logits_row: torch.Tensor, label: int) -> float:
    return float((torch.logsumexp(logits_row, 0) - logits_row[label]).detach())


def test_sla_loss_is_joint_cross_entropy_by_hand():
    x = torch.randn(2, 1, 3, 3)
    y = torch.tensor([1, 0])
    model = Fixed(9, 2 * 4)
    expected = []
    for k in range(4):
        for b in range(2):
            logits = model(rotation.rotate(x[b : b + 1], k))[0]
            expected.append(_ce(logits, int(y[b]) * 4 + k))
    got = sla.sla_loss(model, x, y).item()
    assert math.isclose(got, sum(expected) / len(expected), rel_tol=1e-5)


def test_da_loss_keeps_the_label_for_every_rotation():
    x = torch.randn(2, 1, 3, 3)
    y = torch.tensor([1, 0])
    model = Fixed(9, 2)
    expected = [
        _ce(model(rotation.rotate(x[b : b + 1], k))[0], int(y[b])) for k in range(4) for b in range(2)
    ]
    assert math.isclose(sla.da_loss(model, x, y).item(), sum(expected) / 8, rel_tol=1e-5)


def test_mt_loss_is_class_plus_rotation_cross_entropy():
    torch.manual_seed(0)
    model = models.build("cnn2d", (1, 8, 8), 10, width=4)
    head = sla.RotHead(model.feature_dim)
    x, y = torch.randn(3, 1, 8, 8), torch.tensor([0, 5, 9])
    model.eval()
    xr, k = rotation.rotate_all(x)
    f = model.features(xr)
    expected = F.cross_entropy(model.head(f), y.repeat(4)) + 0.5 * F.cross_entropy(head(f), k)
    assert torch.allclose(sla.mt_loss(model, head, x, y, rot_weight=0.5), expected)


def test_n_outputs():
    assert sla.n_outputs("sla", 10) == 40
    assert sla.n_outputs("da", 10) == sla.n_outputs("baseline", 10) == sla.n_outputs("mt", 10) == 10


def test_sla_predictions_use_the_right_rotation_logits():
    """A model that answers 'class 1' only through the joint logit of the rotation it is actually shown."""

    class RotationAware(nn.Module):
        def forward(self, x):
            # the pixel at (0, 0) identifies the rotation of our test image; put logit 1 on (class 1, that k)
            out = torch.zeros(len(x), 8)
            corner = x[:, 0, 0, 0].round().long()  # values 0..3 = k
            out[torch.arange(len(x)), 1 * 4 + corner] = 1.0
            out[torch.arange(len(x)), 0 * 4 + (corner + 1) % 4] = 0.9  # class 0, but at a *wrong* rotation
            return out

    # an image whose (0, 0) corner reads k after rotate(., k): corners hold 0, 1, 2, 3 accordingly
    img = torch.zeros(1, 1, 2, 2)
    for k in range(4):
        r = rotation.rotate(torch.arange(4.0).view(1, 1, 2, 2), k)  # track where each corner goes
        img[0, 0].view(-1)[int(r[0, 0, 0, 0])] = k
    pred = sla.predictions("sla", RotationAware(), img)
    assert set(pred) == {"acc", "acc_ag"}
    assert pred["acc_ag"].argmax(1).item() == 1  # AG averages (1, k) over copies: 1.0 vs 0.0 for class 0
    assert torch.allclose(pred["acc_ag"], torch.tensor([[0.0, 1.0]]))


def test_baseline_predictions_have_no_aggregation():
    model = Fixed(4, 10)
    assert set(sla.predictions("baseline", model, torch.randn(3, 1, 2, 2))) == {"acc"}


def test_config_validation():
    sla.Config()
    with pytest.raises(ValueError):
        sla.Config(label_fraction=1.5)
    with pytest.raises(ValueError):
        sla.Config(model="resnet18")  # digits are 8x8
    with pytest.raises(ValueError):
        sla.Config(crop_flip=True)  # a flipped digit is another symbol
    with pytest.raises(ValueError):
        sla.Config(arms=["baseline", "rotnet"])
    with pytest.raises(ValueError):
        sla.Config(unknown_knob=1)


@pytest.mark.parametrize("profile", ["smoke", "default", "full"])
def test_params_yaml_profiles_validate(profile):
    cfg = load_config("sla", profile=profile)
    assert cfg.profile == profile
    if profile == "full":
        assert cfg.dataset == "cifar10" and cfg.model.startswith("resnet")
    else:
        assert cfg.dataset == "digits"


def test_bad_override_names_the_key():
    with pytest.raises(config.ConfigError, match="sla.label_fraction"):
        load_config("sla", profile="smoke", overrides={"label_fraction": -0.1})


def test_select_trains_only_the_asked_arms():
    cfg = load_config("sla", profile="smoke", overrides={"n_seeds": 2, "workers": 1, "epochs": 1})
    out = sla.run(cfg, select=lambda arm, seed: seed == 0 or arm in ("sla_few", "baseline_few"))
    assert set(out.runs.loc[out.runs["seed"] == 1, "arm"]) == {"sla_few", "baseline_few"}
    assert set(out.runs.loc[out.runs["seed"] == 0, "arm"]) == {*cfg.arms, "sla_few", "baseline_few"}


def test_packed_seeds_train_like_their_runs_one_by_one():
    """pack > 0: the seeds of each objective and label setting in one vmapped model (batch norm per member,
    the rotated batch and the objective's loss, evaluation in eval mode) give run_one's rows and histories
    to float tolerance; what else shares a pack changes nothing."""
    cfg = load_config("sla", profile="smoke", overrides={"workers": 1, "epochs": 3, "few_epochs": 4})
    plain = sla.run(cfg.model_copy(update={"pack": 0}))
    packed = sla.run(cfg.model_copy(update={"pack": 2}))
    assert list(packed.runs["arm"]) == list(plain.runs["arm"]) and list(packed.runs["seed"]) == list(
        plain.runs["seed"]
    )
    np.testing.assert_allclose(packed.runs["acc"], plain.runs["acc"], atol=0.01)
    np.testing.assert_allclose(packed.runs["acc_ag"], plain.runs["acc_ag"], atol=0.01)
    full = plain.runs["setting"] == "full"
    assert plain.runs.loc[full, "acc"].min() > 0.5  # well past chance (0.1): a comparison that can fail
    np.testing.assert_allclose(packed.history["train_loss"], plain.history["train_loss"], rtol=1e-3)
    args = cfg.model_copy(update={"pack": 2}).model_dump()
    alone = sla.run_pack(args, "mt", "full", [1])[0]
    crowd = sla.run_pack(args, "mt", "full", [0, 1])[1]
    assert alone["history"] == crowd["history"]
    with pytest.raises(pydantic.ValidationError, match="validation split"):
        sla.Config(eval_on="val", pack=8)
