"""Model families shared by the methods: small MLP/CNNs for the embedded sets, ResNets at full scale.

Every model is built by :func:`build` from a name and the input shape, so configs stay plain data
("mlp", "cnn1d", ...). Models that methods split into a feature extractor and a head expose
``features`` and ``head`` submodules and ``forward(x) = head(features(x))``.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class Split(nn.Module):
    """``head(features(x))``: the feature extractor / classifier split used by adaptation methods."""

    def __init__(self, features: nn.Module, head: nn.Module, feature_dim: int):
        super().__init__()
        self.features, self.head, self.feature_dim = features, head, feature_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def mlp(in_dim: int, hidden: int, depth: int, out_dim: int, dropout: float = 0.0) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Flatten()]
    d = in_dim
    for _ in range(depth):
        layers += [nn.Linear(d, hidden), nn.ReLU()]
        if dropout:
            layers.append(nn.Dropout(dropout))
        d = hidden
    layers.append(nn.Linear(d, out_dim))
    return nn.Sequential(*layers)


def _mlp_features(in_dim: int, width: int, depth: int) -> nn.Sequential:
    body = mlp(in_dim, width, depth, width)
    return nn.Sequential(*list(body)[:-1])  # drop the output layer: features end on a ReLU


def _cnn1d_features(length: int, width: int) -> tuple[nn.Sequential, int]:
    """Three strided 1-D convolutions, as in the MNIST-1D paper's CNN baseline."""
    f = nn.Sequential(
        nn.Unflatten(1, (1, length)),
        nn.Conv1d(1, width, 5, stride=2, padding=2),
        nn.ReLU(),
        nn.Conv1d(width, width, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv1d(width, width, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Flatten(),
    )
    return f, width * math.ceil(length / 8)


def _cnn2d_features(channels: int, size: int, width: int) -> tuple[nn.Sequential, int]:
    """Conv-ReLU-pool x2 (+ a third block for inputs of 16 pixels and more)."""
    blocks: list[nn.Module] = []
    c, s = channels, size
    for w in (width, 2 * width) + ((4 * width,) if size >= 16 else ()):
        blocks += [nn.Conv2d(c, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU(), nn.MaxPool2d(2)]
        c, s = w, s // 2
    blocks.append(nn.Flatten())
    return nn.Sequential(*blocks), c * s * s


def _resnet_features(depth: int, channels: int) -> tuple[nn.Module, int]:
    """torchvision ResNet-18/34 adapted to 32x32 inputs (3x3 stem, no max-pool), as in CIFAR work."""
    import torchvision

    net = {18: torchvision.models.resnet18, 34: torchvision.models.resnet34}[depth](num_classes=10)
    net.conv1 = nn.Conv2d(channels, 64, 3, stride=1, padding=1, bias=False)
    net.maxpool = nn.Identity()
    dim = net.fc.in_features
    net.fc = nn.Identity()
    return net, dim


def build(name: str, input_shape: tuple[int, ...], n_out: int, width: int = 64, depth: int = 2) -> Split:
    """A model ``name`` in {mlp, cnn1d, cnn2d, resnet18, resnet34} for inputs of ``input_shape``."""
    if name == "mlp":
        feats, dim = _mlp_features(math.prod(input_shape), width, depth), width
    elif name == "cnn1d":
        if len(input_shape) != 1:
            raise ValueError(f"cnn1d needs 1-D inputs, got shape {input_shape}")
        feats, dim = _cnn1d_features(input_shape[0], width)
    elif name == "cnn2d":
        if len(input_shape) != 3:
            raise ValueError(f"cnn2d needs (C, H, W) inputs, got shape {input_shape}")
        feats, dim = _cnn2d_features(input_shape[0], input_shape[1], width)
    elif name in ("resnet18", "resnet34"):
        feats, dim = _resnet_features(int(name[6:]), input_shape[0])
    else:
        raise ValueError(f"unknown model {name!r} (known: mlp, cnn1d, cnn2d, resnet18, resnet34)")
    return Split(feats, nn.Linear(dim, n_out), dim)


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
