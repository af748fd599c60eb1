"""Model merging: task vectors, TIES-Merging, and the small-scale apparatus both methods share.

Part 1, pure tensor operations on state dicts (no training; unit-tested on hand-made dicts):

    task_vector(ft, pre)      tau = theta_ft - theta_pre            (Ilharco et al. 2023, eq. 1)
    add / negate / scale / sum_vectors / apply(pre, tau, coef)     theta = theta_pre + coef * tau
    trim(tau, k)              keep the top-k fraction of |tau| entries of one task, zero the rest
    elect(trimmed)            gamma = sgn(sum_t trimmed_t)           (sign with the larger total mass;
                                                                     a zero sum takes the majority sign)
    disjoint_mean(trimmed, gamma)  mean over the tasks whose entry is non-zero and agrees with gamma
    ties_merge(taus, k)       trim -> elect -> disjoint mean        (Yadav et al. 2023, Algorithm 1)

Trimming is global over a task vector (all parameters of the encoder flattened together), as in the
TIES paper ("keep the top-k% values according to their magnitude"), k = 0.2 by default.

Part 2, the apparatus: a "pretrained" encoder, per-task heads fitted on its features and then frozen
(the analogue of CLIP's zero-shot heads), and one fine-tuned copy of the encoder per task (encoder
only; its head stays frozen). A checkpoint is a state dict plus the config that builds its module.
Merged encoders are evaluated with each task's own frozen head, via ``torch.func.functional_call``
(no module copies).

Small-scale tasks (default): scikit-learn's 8x8 digits under the 8 symmetries of the square
(identity, three rotations, two flips, two transposes): the same digits, different input families,
so that fine-tuning on one of them moves the encoder in its own direction. The heads are fitted on 30
examples per task (few-shot, the analogue of CLIP's zero-shot heads, which are not trained on the
task's data either). The negation targets are *pixel-permuted* digits (a fixed random permutation of
the 64 pixels and of the labels): a different input family without spatial structure, genuinely
dissimilar from the control task (identity). MNIST-1D under 1-D transforms (time reversal, sign flip,
circular shifts, ...) is available as ``dataset: mnist1d``; pilots showed its MLP fine-tunes too weak
to study merging (pretrained 0.24-0.47, fine-tuned 0.45-0.55 test accuracy), hence digits by default.
The full profile (wired, validated, not run here: no GPU, no data) uses image sets (CIFAR-10, SVHN,
MNIST as colour 32x32) under the same symmetries with a ResNet-18 "foundation" encoder. Deviation
from the papers' CLIP setup: the encoder is pretrained on a small mixture of the task sets
themselves (the data registry has no CIFAR-100 or web-scale set), its heads are few-shot probes, not
zero-shot text heads; no paper reference point is claimed for it. See :func:`load_sources`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pydantic
import torch
import torch.nn.functional as F
from torch import nn

from replikit import data, models, packed, train
from replikit.config import MethodConfig, derive_seed

StateDict = dict[str, torch.Tensor]

# ============================ ALGO LOGIC: task vectors (Ilharco et al. 2023) =======================


def _mergeable(t: torch.Tensor) -> bool:
    return torch.is_floating_point(t)


def task_vector(finetuned: StateDict, pretrained: StateDict) -> StateDict:
    """tau = theta_finetuned - theta_pretrained, for every floating-point entry (integer buffers skipped)."""
    if set(finetuned) != set(pretrained):
        raise KeyError(f"state dicts differ in keys: {sorted(set(finetuned) ^ set(pretrained))}")
    return {k: finetuned[k] - pretrained[k] for k in pretrained if _mergeable(pretrained[k])}


def add(a: StateDict, b: StateDict) -> StateDict:
    """a + b, key by key (the keys must match)."""
    if set(a) != set(b):
        raise KeyError(f"task vectors differ in keys: {sorted(set(a) ^ set(b))}")
    return {k: a[k] + b[k] for k in a}


def scale(tau: StateDict, coef: float) -> StateDict:
    return {k: coef * v for k, v in tau.items()}


def negate(tau: StateDict) -> StateDict:
    """-tau: moving against the task's direction (forgetting via negation)."""
    return scale(tau, -1.0)


def sum_vectors(taus: Sequence[StateDict]) -> StateDict:
    """sum_t tau_t (task addition, before scaling by lambda)."""
    if not taus:
        raise ValueError("sum of no task vectors")
    out = dict(taus[0])
    for tau in taus[1:]:
        out = add(out, tau)
    return out


def apply(pretrained: StateDict, tau: StateDict, coef: float = 1.0) -> StateDict:
    """theta = theta_pre + coef * tau; entries tau lacks (integer buffers) are copied from theta_pre."""
    unknown = set(tau) - set(pretrained)
    if unknown:
        raise KeyError(f"task vector has keys the model lacks: {sorted(unknown)}")
    return {k: (v + coef * tau[k]) if k in tau else v for k, v in pretrained.items()}


def flatten(tau: StateDict) -> torch.Tensor:
    """All entries as one vector (key order of ``tau``)."""
    return torch.cat([v.reshape(-1) for v in tau.values()])


def unflatten(vec: torch.Tensor, like: StateDict) -> StateDict:
    out, i = {}, 0
    for k, v in like.items():
        out[k] = vec[i : i + v.numel()].view_as(v)
        i += v.numel()
    if i != vec.numel():
        raise ValueError(f"vector of {vec.numel()} entries for a state dict of {i}")
    return out


# ============================ ALGO LOGIC: TIES-Merging (Yadav et al. 2023) =========================


def trim_flat(vec: torch.Tensor, k: float) -> torch.Tensor:
    """Keep the ``round(k * n)`` (at least 1) largest-magnitude entries of ``vec``, zero the others."""
    if not 0.0 < k <= 1.0:
        raise ValueError(f"trim fraction k={k} outside (0, 1]")
    n_keep = max(1, round(k * vec.numel()))
    if n_keep >= vec.numel():
        return vec.clone()
    keep = torch.zeros_like(vec, dtype=torch.bool)
    keep[vec.abs().topk(n_keep, sorted=False).indices] = True
    return torch.where(keep, vec, torch.zeros_like(vec))


def trim(tau: StateDict, k: float) -> StateDict:
    """Step 1 (trim): the top-k fraction of tau's entries by magnitude, over the whole task vector."""
    return unflatten(trim_flat(flatten(tau), k), tau)


def elect(trimmed: torch.Tensor) -> torch.Tensor:
    """Step 2 (elect): gamma_p = sgn(sum_t trimmed_t,p) for stacked trimmed vectors of shape (T, P).

    The sign with the larger total magnitude wins. An entry whose sum is exactly 0 (every task trimmed
    it, or its values cancel) takes the majority sign, sgn(sum_p gamma_p): the sign most entries
    elected, as the reference code does (``resolve_zero_signs(..., "majority")`` in
    github.com/prateeky2806/ties-merging, ``src/utils/merge_utils.py``). Where every task trimmed the
    entry the merged value stays 0 whatever the sign; where values cancel, the disjoint mean keeps
    those of the majority sign. In the degenerate case of as many positive as negative elected signs
    the zero entries keep sign 0 (and merge to 0)."""
    gamma = torch.sign(trimmed.sum(0))
    return torch.where(gamma == 0, torch.sign(gamma.sum()), gamma)


def disjoint_mean(trimmed: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
    """Step 3 (disjoint merge): mean over A_p = {t : trimmed_t,p != 0 and sgn = gamma_p}; 0 if A_p is empty."""
    agree = (torch.sign(trimmed) == gamma.unsqueeze(0)) & (trimmed != 0)
    total = (trimmed * agree).sum(0)
    count = agree.sum(0)
    return total / count.clamp(min=1)


def ties_merge_flat(vectors: torch.Tensor, k: float) -> torch.Tensor:
    """TIES on stacked flat task vectors (T, P): trim each row, elect signs, disjoint mean."""
    trimmed = torch.stack([trim_flat(v, k) for v in vectors])
    return disjoint_mean(trimmed, elect(trimmed))


def ties_merge(taus: Sequence[StateDict], k: float = 0.2) -> StateDict:
    """The TIES-merged task vector tau_m (apply it with ``apply(pre, tau_m, lambda)``)."""
    if not taus:
        raise ValueError("TIES-merge of no task vectors")
    return unflatten(ties_merge_flat(torch.stack([flatten(t) for t in taus]), k), taus[0])


def ta_merge(taus: Sequence[StateDict]) -> StateDict:
    """Task arithmetic's merged vector: the plain sum (apply with ``apply(pre, tau, lambda)``)."""
    return sum_vectors(taus)


# ===================================== the apparatus ==============================================


class MergingConfig(MethodConfig):
    """Knobs shared by the merging methods: data, encoder, pretraining, heads and fine-tuning."""

    dataset: Literal["mnist1d", "digits", "images"] = pydantic.Field(
        "digits",
        description="mnist1d: MNIST-1D under time transforms; digits: 8x8 digits under the square's "
        "symmetries; images: torchvision sets under the same symmetries (full profile)",
    )
    image_sets: list[Literal["cifar10", "svhn", "mnist"]] = pydantic.Field(
        default_factory=lambda: ["cifar10", "svhn", "mnist"],
        min_length=1,
        max_length=3,
        description="dataset=images: the source sets of the tasks (each under several transforms)",
    )
    model: Literal["mlp", "cnn1d", "cnn2d", "resnet18"] = pydantic.Field("mlp", description="encoder family")
    width: int = pydantic.Field(1024, ge=4, le=4096, description="hidden units (MLP) or channels (CNN)")
    depth: int = pydantic.Field(1, ge=1, le=8, description="hidden layers of the MLP encoder")
    pretrain_per_task: int = pydantic.Field(
        20, ge=10, le=100_000, description="examples of each task in the pretraining mixture"
    )
    pretrain_epochs: int = pydantic.Field(20, ge=1, le=500, description="epochs over the pretraining mixture")
    head_steps: int = pydantic.Field(
        200,
        ge=1,
        le=10_000,
        description="full-batch Adam steps fitting each frozen head on pretrained features",
    )
    head_size: int = pydantic.Field(
        30,
        ge=0,
        le=100_000,
        description="examples per task the frozen head is fitted on (first of the "
        "fine-tuning split; 0 = all): few-shot heads play CLIP's zero-shot heads",
    )
    finetune_size: int = pydantic.Field(700, ge=50, le=100_000, description="training examples per task")
    finetune_epochs: int = pydantic.Field(
        20, ge=1, le=500, description="epochs of encoder fine-tuning per task"
    )
    val_size: int = pydantic.Field(
        250,
        ge=50,
        le=20_000,
        description="validation examples carved from training data (lambda, k chosen here)",
    )
    test_size: int = pydantic.Field(0, ge=0, description="use the first N test examples (0 = all)")
    batch_size: int = pydantic.Field(64, ge=8, le=8192)
    lr: float = pydantic.Field(
        1e-3, gt=0.0, le=1.0, description="learning rate (pretraining and fine-tuning)"
    )
    finetune_optimizer: Literal["adam", "sgd"] = pydantic.Field("adam", description="fine-tuning optimiser")
    finetune_lr: float = pydantic.Field(0.0, ge=0.0, le=1.0, description="fine-tuning learning rate (0 = lr)")
    weight_decay: float = pydantic.Field(0.0, ge=0.0, le=0.1)
    pack: int = packed.knob("a seed's task fine-tunes")  # type: ignore[assignment]
    _resolve_pack = packed.auto_width(lambda c: c.get("model") == "mlp")


# Input transforms. 1-D signals (MNIST-1D): transforms of the time axis. Images (digits, the
# full profile's sets): the 8 symmetries of the square (rotations and flips of the last two axes).
def _roll(x: torch.Tensor, frac: float) -> torch.Tensor:
    return torch.roll(x, round(frac * x.shape[-1]), dims=-1)


TRANSFORMS_1D: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "identity": lambda x: x.clone(),
    "reverse": lambda x: x.flip(-1),
    "negate": lambda x: -x,
    "shift_half": lambda x: _roll(x, 0.5),
    "reverse_negate": lambda x: -x.flip(-1),
    "shift_quarter": lambda x: 2.0 * _roll(x, 0.25),  # circular shift with rescale
    "diff": lambda x: x - torch.roll(x, 1, dims=-1),
    "cumsum": lambda x: torch.cumsum(x, dim=-1),
}
TRANSFORMS_2D: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "identity": lambda x: x.clone(),
    "rot90": lambda x: torch.rot90(x, 1, dims=(-2, -1)),
    "rot180": lambda x: torch.rot90(x, 2, dims=(-2, -1)),
    "rot270": lambda x: torch.rot90(x, 3, dims=(-2, -1)),
    "hflip": lambda x: x.flip(-1),
    "vflip": lambda x: x.flip(-2),
    "transpose": lambda x: x.transpose(-2, -1).contiguous(),
    "antitranspose": lambda x: torch.rot90(x, 2, dims=(-2, -1)).transpose(-2, -1).contiguous(),
}
CONTROL_TASK = "identity"


def transforms_for(dataset: str) -> dict[str, Callable[[torch.Tensor], torch.Tensor]]:
    return TRANSFORMS_1D if dataset == "mnist1d" else TRANSFORMS_2D


def addition_names(dataset: str, n: int = 8) -> list[str]:
    """The first ``n`` transforms of the family (identity first): the addition tasks."""
    return list(transforms_for(dataset))[:n]


@dataclass(frozen=True)
class Task:
    """One task: an input transform (or a fixed spatial permutation) and a label permutation."""

    name: str
    transform: str = "identity"  # a key of TRANSFORMS, or "permute" (fixed permutation from ``perm_seed``)
    perm_seed: int | None = None  # permute: the input and label permutations come from this seed
    source: str = "mnist1d"

    def inputs(self, x: torch.Tensor) -> torch.Tensor:
        if self.transform == "permute":
            g = torch.Generator().manual_seed(self.perm_seed)
            flat = x.reshape(len(x), -1)
            perm = torch.randperm(flat.shape[1], generator=g).to(x.device)
            return flat[:, perm].reshape(x.shape)
        table = TRANSFORMS_1D if x.dim() == 2 else TRANSFORMS_2D
        return table[self.transform](x)

    def labels(self, y: torch.Tensor, n_classes: int) -> torch.Tensor:
        if self.transform == "permute":
            g = torch.Generator().manual_seed(self.perm_seed + 1)
            return torch.randperm(n_classes, generator=g).to(y.device)[y]
        return y


def addition_tasks(names: Sequence[str], sources: Sequence[str] = ("mnist1d",)) -> list[Task]:
    """Tasks of the addition experiments: each source set under each transform, the first len(names)."""
    tasks = [Task(f"{s}:{n}" if len(sources) > 1 else n, n, source=s) for n in names for s in sources]
    return tasks[: len(names)]


def control_name(sources: Sequence[str]) -> str:
    return f"{sources[0]}:{CONTROL_TASK}" if len(sources) > 1 else CONTROL_TASK


def negation_targets(n: int, source: str = "mnist1d") -> list[Task]:
    """Permuted-signal tasks (fixed across seeds: the task is part of the problem, not of the draw)."""
    return [Task(f"permuted_{i}", "permute", perm_seed=1000 + 17 * i, source=source) for i in range(n)]


@dataclass
class Checkpoint:
    """A state dict plus the config that builds its module."""

    state: StateDict
    config: dict

    def build(self) -> nn.Module:
        module = build_encoder(**self.config)
        module.load_state_dict(self.state)
        return module


def build_encoder(model: str, input_shape: tuple[int, ...], width: int, depth: int) -> nn.Module:
    """The encoder (feature extractor) of ``models.build`` for this family."""
    return models.build(model, tuple(input_shape), 2, width=width, depth=depth).features


def feature_dim(encoder: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Width of the encoder's output, probed with one zero input on the encoder's own device, in eval mode
    (a probe in training mode would move batch-norm statistics)."""
    device = next(encoder.parameters()).device
    was_training = encoder.training
    encoder.eval()
    with torch.no_grad():
        dim = encoder(torch.zeros(1, *input_shape, device=device)).shape[1]
    encoder.train(was_training)
    return dim


@dataclass
class TaskData:
    """One task's tensors: fine-tuning train split, validation split (carved from training), test."""

    task: Task
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    x_pre: torch.Tensor
    y_pre: torch.Tensor


@dataclass
class Suite:
    """Everything one seed's merging experiments need: checkpoints, frozen heads, data."""

    pretrained: Checkpoint
    finetuned: dict[str, Checkpoint]
    heads: dict[str, nn.Linear]
    data: dict[str, TaskData]
    encoder: nn.Module  # a module instance to call functionally with any state dict
    n_classes: int
    history: list[dict] = field(default_factory=list)
    stacked: bool = False  # packed runs (CUDA): a state's accuracies on its tasks in one pass

    def taus(self, names: Sequence[str]) -> list[StateDict]:
        return [task_vector(self.finetuned[n].state, self.pretrained.state) for n in names]

    @torch.no_grad()
    def accuracy(self, state: StateDict, name: str, split: str = "test") -> float:
        """Accuracy of encoder ``state`` with task ``name``'s frozen head on ``split`` (val | test | train)."""
        d = self.data[name]
        x, y = getattr(d, f"x_{split}"), getattr(d, f"y_{split}")
        correct = 0
        for i in range(0, len(x), 4096):
            feats = torch.func.functional_call(self.encoder, state, (x[i : i + 4096],))
            correct += (self.heads[name](feats).argmax(1) == y[i : i + 4096]).sum().item()
        return correct / len(y)

    @torch.no_grad()
    def accuracies(self, state: StateDict, names: Sequence[str], split: str = "test") -> dict[str, float]:
        """:meth:`accuracy` on each task of ``names``. A stacked suite (a packed run's) evaluates them in
        one pass when their ``split`` sets have one shape: one encoder call on all tasks' inputs, every
        head at once (one batched matmul), one host read; the same predictions up to rounding."""
        xs = [getattr(self.data[n], f"x_{split}") for n in names]
        if (
            not self.stacked
            or len(names) < 2
            or len({x.shape for x in xs}) > 1
            or len(names) * len(xs[0]) > 16384
        ):
            return {n: self.accuracy(state, n, split) for n in names}
        ys = torch.stack([getattr(self.data[n], f"y_{split}") for n in names])
        feats = torch.func.functional_call(self.encoder, state, (torch.cat(xs),)).view(
            len(names), len(xs[0]), -1
        )
        w = torch.stack([self.heads[n].weight for n in names])
        b = torch.stack([self.heads[n].bias for n in names])
        correct = (torch.baddbmm(b[:, None, :], feats, w.transpose(1, 2)).argmax(2) == ys).sum(1).tolist()
        return {n: c / ys.shape[1] for n, c in zip(names, correct)}


def source_names(cfg: MergingConfig) -> list[str]:
    return list(cfg.image_sets) if cfg.dataset == "images" else [cfg.dataset]


def load_sources(cfg: MergingConfig) -> dict[str, data.Dataset]:
    """The source data sets: MNIST-1D, or the image sets (grey MNIST turned into colour 32x32)."""
    if cfg.dataset in ("mnist1d", "digits"):
        return {cfg.dataset: data.load(cfg.dataset)}
    from replikit.data.real import to_rgb32

    out = {}
    for name in cfg.image_sets:
        ds = data.load(name)
        if ds.x_train.shape[1] == 1:
            ds = data.Dataset(
                name, to_rgb32(ds.x_train), ds.y_train, to_rgb32(ds.x_test), ds.y_test, ds.n_classes
            )
        out[name] = ds
    return out


def _standardize(*xs: torch.Tensor, ref: torch.Tensor) -> list[torch.Tensor]:
    mu, sd = ref.mean(), ref.std().clamp(min=1e-6)
    return [(x - mu) / sd for x in xs]


def _task_tensors(
    task: Task, ds: data.Dataset, x_np: np.ndarray, y_np: np.ndarray, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    x = train.to_device(x_np, device, torch.float32)
    y = train.to_device(y_np, device, torch.int64)
    return task.inputs(x), task.labels(y, ds.n_classes)


def make_task_data(
    cfg: MergingConfig,
    tasks: Sequence[Task],
    sources: dict[str, data.Dataset],
    rep: int,
    method: str,
    device: torch.device,
) -> dict[str, TaskData]:
    """Per task: a pretraining slice, a fine-tuning split and a validation split, all carved from the
    source's *training* data (validation disjoint from both), and the test set, transformed.

    Each task draws its own fine-tuning and pretraining examples (seeded by rep and task); the
    validation indices are shared by all tasks of a source. Inputs are standardised per task with the
    mean and std of its fine-tuning split."""
    out = {}
    for task in tasks:
        ds = sources[task.source]
        n = len(ds.y_train)
        rng = np.random.default_rng(derive_seed(cfg.seed, method, "data", "val", rep))
        val_idx = rng.permutation(n)[: cfg.val_size]
        pool = np.setdiff1d(np.arange(n), val_idx)
        rng_t = np.random.default_rng(derive_seed(cfg.seed, method, "data", task.name, rep))
        pick = rng_t.permutation(pool)
        if cfg.finetune_size + cfg.pretrain_per_task > len(pick):
            raise ValueError(
                f"finetune_size + pretrain_per_task = {cfg.finetune_size + cfg.pretrain_per_task} exceeds the "
                f"{len(pick)} training examples left after validation"
            )
        ft_idx, pre_idx = (
            pick[: cfg.finetune_size],
            pick[cfg.finetune_size : cfg.finetune_size + cfg.pretrain_per_task],
        )
        n_test = cfg.test_size or len(ds.y_test)
        x_tr, y_tr = _task_tensors(task, ds, ds.x_train[ft_idx], ds.y_train[ft_idx], device)
        x_va, y_va = _task_tensors(task, ds, ds.x_train[val_idx], ds.y_train[val_idx], device)
        x_te, y_te = _task_tensors(task, ds, ds.x_test[:n_test], ds.y_test[:n_test], device)
        x_pr, y_pr = _task_tensors(task, ds, ds.x_train[pre_idx], ds.y_train[pre_idx], device)
        x_tr, x_va, x_te, x_pr = _standardize(x_tr, x_va, x_te, x_pr, ref=x_tr)
        out[task.name] = TaskData(task, x_tr, y_tr, x_va, y_va, x_te, y_te, x_pr, y_pr)
    return out


def fit_head(features: torch.Tensor, y: torch.Tensor, n_classes: int, steps: int, seed: int) -> nn.Linear:
    """Multinomial logistic regression on frozen features (full-batch Adam), then frozen."""
    torch.manual_seed(seed)
    head = train.prepare_model(nn.Linear(features.shape[1], n_classes), features.device)
    opt = train.build_optimizer(head.parameters(), "adam", 1e-2, features.device)  # fused on CUDA
    feats = features.detach()
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(head(feats), y).backward()
        opt.step()
    head.requires_grad_(False)
    return head.eval()


def fit_heads(
    features: Sequence[torch.Tensor],
    labels: Sequence[torch.Tensor],
    n_classes: int,
    steps: int,
    seeds: Sequence[int],
) -> list[nn.Linear]:
    """:func:`fit_head` for several heads at once (a packed run's heads, on CUDA): each with its own seeded
    init, features and labels (one shape for all), trained as one stacked problem, the sum of the heads'
    mean cross-entropies under one Adam. Adam's update is elementwise and a head's gradient is that of its
    own loss, so each head takes its own steps (equal to :func:`fit_head`'s up to rounding); one batched
    matmul a step for all heads instead of one each."""
    heads = []
    for f, seed in zip(features, seeds):
        torch.manual_seed(seed)
        heads.append(train.prepare_model(nn.Linear(f.shape[1], n_classes), f.device))
    f = torch.stack([x.detach() for x in features])  # (heads, m, D)
    y = torch.stack(list(labels)).flatten()
    w = torch.stack([h.weight.detach() for h in heads]).requires_grad_()  # (heads, classes, D)
    b = torch.stack([h.bias.detach() for h in heads]).requires_grad_()
    opt = train.build_optimizer([w, b], "adam", 1e-2, f.device)  # fused on CUDA: one kernel a step
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        logits = torch.baddbmm(b[:, None, :], f, w.transpose(1, 2)).flatten(0, 1)
        F.cross_entropy(logits, y, reduction="none").view(len(heads), -1).mean(1).sum().backward()
        opt.step()
    with torch.no_grad():
        for h, wh, bh in zip(heads, w, b):
            h.weight.copy_(wh)
            h.bias.copy_(bh)
    return [h.requires_grad_(False).eval() for h in heads]


def build_suite(
    cfg: MergingConfig,
    tasks: Sequence[Task],
    rep: int,
    method: str,
    pretrain_tasks: Sequence[Task] | None = None,
) -> Suite:
    """Pretrain an encoder on a small mixture of ``pretrain_tasks`` (default: ``tasks``), fit and freeze
    one head per task on its features, then fine-tune a copy of the encoder on each task."""
    device = train.resolve_device(cfg.device)
    sources = load_sources(cfg)
    td = make_task_data(cfg, tasks, sources, rep, method, device)
    names = [t.name for t in tasks]
    pre_names = [t.name for t in pretrain_tasks] if pretrain_tasks is not None else names
    n_classes = max(ds.n_classes for ds in sources.values())
    input_shape = tuple(next(iter(td.values())).x_train.shape[1:])
    enc_cfg = {"model": cfg.model, "input_shape": input_shape, "width": cfg.width, "depth": cfg.depth}

    # 1. pretraining on the mixture, with a throwaway linear head
    train.manual_seed(derive_seed(cfg.seed, method, "init", rep))
    encoder = train.prepare_model(build_encoder(**enc_cfg), device)
    mix_head = train.prepare_model(nn.Linear(feature_dim(encoder, input_shape), n_classes), device)
    x_mix = torch.cat([td[n].x_pre for n in pre_names])
    y_mix = torch.cat([td[n].y_pre for n in pre_names])
    history = [
        dict(h, stage="pretrain", task="mixture")
        for h in train.fit(
            lambda idx, p: F.cross_entropy(mix_head(encoder(x_mix[idx])), y_mix[idx]),
            list(encoder.parameters()) + list(mix_head.parameters()),
            len(y_mix),
            epochs=cfg.pretrain_epochs,
            batch_size=min(cfg.batch_size, len(y_mix)),
            seed=derive_seed(cfg.seed, method, "batches", "pretrain", rep),
            device=device,
            lr=cfg.lr,
            weight_decay=cfg.weight_decay,
            models=[encoder],
            desc=f"pretrain {rep}",
            resume_state={"head": mix_head},
        )
    ]
    encoder.eval()
    pre_state = {k: v.detach().clone() for k, v in encoder.state_dict().items()}

    # 2. one frozen head per task, fitted on the pretrained features of its fine-tuning split (a packed
    # run fits them all as one stacked problem: its tasks' splits have one size)
    feats, labels, seeds = [], [], []
    for n in names:
        m = cfg.head_size or len(td[n].y_train)
        with torch.no_grad():
            feats.append(encoder(td[n].x_train[:m]))
        labels.append(td[n].y_train[:m])
        seeds.append(derive_seed(cfg.seed, method, "head", n, rep))
    if cfg.pack and len({f.shape for f in feats}) == 1:
        heads = dict(zip(names, fit_heads(feats, labels, n_classes, cfg.head_steps, seeds)))
    else:
        heads = {
            n: fit_head(f, y, n_classes, cfg.head_steps, seed)
            for n, f, y, seed in zip(names, feats, labels, seeds)
        }

    # 3. fine-tune the encoder (only) on each task, its head frozen
    finetuned = {}
    if cfg.pack:
        for _, chunk in packed.chunks(names, cfg.pack):
            done, rows = _finetune_pack(cfg, chunk, td, heads, pre_state, enc_cfg, rep, method)
            finetuned.update(done)
            history += rows
        return Suite(
            Checkpoint(pre_state, enc_cfg), finetuned, heads, td, encoder, n_classes, history, stacked=True
        )
    for n in names:
        enc = train.prepare_model(build_encoder(**enc_cfg), device)
        enc.load_state_dict(pre_state)
        d, head = td[n], heads[n]
        rows = train.fit(
            lambda idx, p, enc=enc, d=d, head=head: F.cross_entropy(
                head(enc(d.x_train[idx])), d.y_train[idx]
            ),
            enc.parameters(),
            len(d.y_train),
            epochs=cfg.finetune_epochs,
            batch_size=min(cfg.batch_size, len(d.y_train)),
            seed=derive_seed(cfg.seed, method, "batches", n, rep),
            device=device,
            lr=cfg.finetune_lr or cfg.lr,
            optimizer=cfg.finetune_optimizer,
            weight_decay=cfg.weight_decay,
            models=[enc],
            desc=f"finetune {n} {rep}",
            resume_state={},
        )
        history += [dict(h, stage="finetune", task=n) for h in rows]
        finetuned[n] = Checkpoint({k: v.detach().clone() for k, v in enc.state_dict().items()}, enc_cfg)
    return Suite(Checkpoint(pre_state, enc_cfg), finetuned, heads, td, encoder, n_classes, history)


def _finetune_pack(
    cfg: MergingConfig,
    names: Sequence[str],
    td: dict[str, TaskData],
    heads: dict[str, nn.Linear],
    pre_state: StateDict,
    enc_cfg: dict,
    rep: int,
    method: str,
) -> tuple[dict[str, Checkpoint], list[dict]]:
    """The tasks ``names`` fine-tuned as one pack of width ``cfg.pack`` (:func:`replikit.packed.fit`):
    each member is the pretrained encoder under its task's frozen head, on its task's own inputs and
    labels and its own batch stream, as :func:`build_suite` fine-tunes it alone."""
    device = pre_state[next(iter(pre_state))].device
    members = []
    for n in names:
        enc = build_encoder(**enc_cfg)
        enc.load_state_dict(pre_state)
        members.append(nn.Sequential(enc, heads[n]).to(device))  # the head's parameters stay frozen
    data_ = [td[n] for n in names]
    n_train = len(data_[0].y_train)
    if any(len(d.y_train) != n_train for d in data_):
        raise ValueError("a pack's tasks must have fine-tuning splits of one size")
    batch = min(cfg.batch_size, n_train)

    def inputs(idx: torch.Tensor) -> torch.Tensor:
        rows = [d.x_train[i] for d, i in zip(data_, idx)]
        return torch.stack(rows + [data_[0].x_train[i] for i in idx[len(rows) :]])

    states, histories = packed.fit(
        members,
        [
            packed.Batches(
                torch.arange(n_train, device=device), batch, derive_seed(cfg.seed, method, "batches", n, rep)
            ).next
            for n in names
        ],
        data_[0].x_train,
        torch.stack([d.y_train for d in data_]),
        epochs=cfg.finetune_epochs,
        steps_per_epoch=max(1, n_train // batch),
        width=cfg.pack,
        lr=cfg.finetune_lr or cfg.lr,
        optimizer=cfg.finetune_optimizer,
        weight_decay=cfg.weight_decay,
        inputs=inputs,
        desc=f"finetune pack of {len(names)} {rep}",
        resume_state={},
    )
    done = {
        n: Checkpoint({k[2:]: v for k, v in state.items() if k.startswith("0.")}, enc_cfg)
        for n, state in zip(names, states)
    }
    rows = [dict(h, stage="finetune", task=n) for n, hist in zip(names, histories) for h in hist]
    return done, rows


def best_coef(scores: dict[float, float]) -> float:
    """The coefficient with the highest validation score (ties: the smaller coefficient)."""
    return max(sorted(scores), key=lambda c: scores[c])


def mean(values) -> float:
    values = list(values)
    return float(sum(values) / len(values)) if values else math.nan
