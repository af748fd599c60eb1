"""Every method's GPU-facing code on CPU: device placement (smoke profile) and the full-profile path.

Both run under :class:`placement.PlacementGuard`, which fails where a CUDA run would mix devices (see
tests/placement.py). The full-profile test runs each method's ``full`` configuration on stand-ins of the
real data sets (``replikit.data.fake``: real shapes, seeded noise, 512 train / 64 test examples), with
sizes cut to a few steps: it checks wiring (shapes, models, losses, the data path), not results.
"""

from __future__ import annotations

import pytest
import torch
from conftest import benchmark
from placement import PlacementError, PlacementGuard

from replikit import models, train
from replikit.data import fake
from replikit.methods import available, get_method, load_config

gpu_check = benchmark("gpu_check")

# full profile, cut to a few steps at real input shapes: gpu-check's --quick sizes (one place for the tiny
# sizes of every method), plus the epoch caps gpu-check applies itself by capping fit calls
EPOCH_CAPS = {
    "dann": {"epochs": 1},
    "elr": {"epochs": 1},
    "sla": {"epochs": 1, "few_epochs": 1, "arms": ["baseline", "sla", "mt"]},
    "rotnet": {"pretext_epochs": 1},
    "gradnorm": {"epochs": 1, "trace_every": 1},
    "uncertainty_weighting": {"epochs": 1},
    "task_arithmetic": {"pretrain_epochs": 1, "finetune_epochs": 1, "lambdas": [0.5, 1.0]},
    "ties_merging": {"pretrain_epochs": 1, "finetune_epochs": 1},
    "model_soups": {"pretrain_epochs": 1, "ft_epochs": 1},
    "downstream_scaling": {
        "pretrain_tokens": [256, 512, 1024, 2048, 4096],
        "finetune_tokens": 1024,
        "doc_len": 128,
        "batch_size": 64,
        "ft_epochs": 1,
        "pretrain_min_steps": 0,
    },
    "data_diet": {"epochs": 1, "score_epoch": 1},
    "grokking": {"alphas": [0.25, 1.0], "n_max": 0},
    "critical_periods": {"depths": [1, 2], "width": 8, "n_max": 0},
}
TINY_FULL = {m: {**gpu_check.QUICK.get(m, {}), **caps} for m, caps in EPOCH_CAPS.items()}
COMMON = {"device": "cpu", "workers": 1, "n_seeds": 1}  # workers 1: the guard sees only this process


def test_every_method_has_a_tiny_full_profile():
    assert set(TINY_FULL) == set(available())


@pytest.mark.parametrize("method", available())
def test_smoke_run_places_every_tensor(method):
    """The smoke profile's run() never mixes the run's device with a tensor left on the CPU."""
    cfg = load_config(method, profile="smoke", overrides=COMMON)
    with PlacementGuard():
        outcome = get_method(method).run(cfg)
    assert len(outcome.runs)


PACKING = [m for m in available() if "pack" in get_method(m).Config.model_fields]


def test_the_methods_that_pack_are_the_eleven_the_readme_names():
    assert sorted(PACKING) == sorted(
        [
            "dann",
            "rotnet",
            "data_diet",
            "downstream_scaling",
            "elr",
            "gradnorm",
            "model_soups",
            "sla",
            "task_arithmetic",
            "ties_merging",
            "uncertainty_weighting",
        ]
    )


@pytest.mark.parametrize("method", PACKING)
def test_packed_smoke_run_places_every_tensor(method):
    """The packed path (what ``pack: auto`` runs on CUDA) under the same guard, forced on the CPU."""
    cfg = load_config(method, profile="smoke", overrides={**COMMON, "pack": 4})
    assert cfg.pack == 4  # narrow: the path, not the speed, is under test on the CPU
    with PlacementGuard():
        outcome = get_method(method).run(cfg)
    assert len(outcome.runs)


def _cuda_run_config(method: str) -> dict:
    """What a CUDA run would train, on the CPU: the packing methods packed (``pack: auto`` on CUDA)."""
    return {**COMMON, **({"pack": 4} if method in PACKING else {})}


@pytest.mark.parametrize("method", available())
def test_smoke_run_trains_under_bf16_autocast(method, monkeypatch):
    """The CUDA path's mixed precision on the CPU: ``train.autocast`` (bf16 on CUDA only) switched on for
    the CPU, each method's smoke run as CUDA would run it (packed where it packs) must train and give
    finite metrics: a loss fed bf16 logits where it needs float32, a dtype clash between a bf16 activation
    and a float32 buffer, or an index with the wrong dtype fails here before it fails on a GPU."""
    entered = []

    def bf16_on_cpu(device):
        entered.append(device)
        return torch.autocast("cpu", dtype=torch.bfloat16)

    monkeypatch.setattr(train, "autocast", bf16_on_cpu)
    cfg = load_config(method, profile="smoke", overrides=_cuda_run_config(method))
    outcome = get_method(method).run(cfg)
    numbers = outcome.runs.select_dtypes("number")
    assert len(outcome.runs) and numbers.notna().any().all()
    # grokking and critical_periods descend by hand in float32 (no train.fit, nothing to autocast)
    assert entered or method in ("grokking", "critical_periods")


def _narrow_resnet(depth: int, channels: int) -> tuple[torch.nn.Module, int]:
    """A ResNet-shaped stand-in 4 channels wide (3x3 stem, two strided stages, pooled): ResNet-18/34 at width
    64 cost seconds per CPU step at 32x32, and the GPU check runs the real ones."""
    from torch import nn

    def block(c_in, c_out, stride):
        return [nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]

    net = nn.Sequential(
        *block(channels, 4, 1), *block(4, 8, 2), *block(8, 8, 2), nn.AdaptiveAvgPool2d(1), nn.Flatten()
    )
    return net, 8


@pytest.mark.parametrize("method", available())
def test_full_profile_path_runs_on_fake_data(method, monkeypatch):
    """The full profile's code path (real input shapes, its data handling, heads and losses) end to end on
    stand-in data, a few steps; ResNets are swapped for a narrow stand-in of the same interface."""
    monkeypatch.setattr(models, "_resnet_features", _narrow_resnet)
    cfg = load_config(method, profile="full", overrides={**TINY_FULL[method], **COMMON})
    with fake.substitute(512, 64), PlacementGuard():
        outcome = get_method(method).run(cfg)
    assert len(outcome.runs)


# ------------------------------------------------------------------ the guard itself


def _probe_without_device(encoder: torch.nn.Module) -> torch.Tensor:
    return encoder(torch.zeros(1, 4))  # the slip of issue 9 (merging.feature_dim): no device named


def test_guard_catches_a_tensor_created_without_device():
    with (
        PlacementGuard(packages=(__name__,)),
        pytest.raises(PlacementError, match="created without a device"),
    ):
        encoder = train.prepare_model(torch.nn.Linear(4, 3), torch.device("cpu"))  # moved inside the guard
        _probe_without_device(encoder)


def test_guard_catches_a_module_never_moved():
    model = models.build("mlp", (4,), 2, width=8)
    x = train.to_device(torch.ones(3, 4).numpy(), torch.device("cpu"))
    with PlacementGuard(packages=(__name__,)), pytest.raises(PlacementError, match="never moved"):
        model(x)


def test_guard_catches_a_cpu_copy_mixed_back_in():
    w = torch.ones(3, device="cpu")
    with PlacementGuard(packages=(__name__,)), pytest.raises(PlacementError):
        w.detach().cpu() * torch.ones(3, device="cpu")


def test_guard_lets_placed_code_through():
    device = torch.device("cpu")
    with PlacementGuard(packages=(__name__,)):
        model = train.prepare_model(models.build("mlp", (4,), 2, width=8), device)
        x = torch.as_tensor([[1.0, 2.0, 3.0, 4.0]]).to(device)  # made on the CPU, then moved: fine
        scale = torch.tensor(2.0)  # a 0-dim CPU tensor mixes with CUDA tensors: fine
        out = model(x) * scale
        assert out.shape == (1, 2) and torch.isfinite(out).all().item()
