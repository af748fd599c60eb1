"""Multi-task training: a shared trunk, one head per task, and pluggable task weightings.

A multi-task loss is ``L = sum_i w_i L_i``. How the weights ``w_i`` are set is the subject of several
papers; here each rule is one small class with one job (:class:`Equal`, :class:`Fixed`,
:class:`Uncertainty`, :class:`GradNorm`), all with the same interface:

    weighting.parameters()   learnable tensors the *model's* optimiser should update (uncertainty's
                             log-variances); empty for the others
    weighting.combine(L)     the scalar to back-propagate through the model, from the vector of task
                             losses ``L`` (shape [T]); GradNorm also updates its own weights here
    weighting.weights()      the current effective weights w_i (for logs and figures), on the device
    weighting.to(device)     moves its tensors (``fit`` does it, before building the optimiser)

Training reuses :func:`replikit.train.fit` unchanged: its ``step(idx, p)`` returns
``weighting.combine(task_losses)``, so the weighted step needs no loop of its own. GradNorm needs
per-task gradient norms on the last shared layer *before* the model step; it computes them inside
``combine`` with ``torch.autograd.grad(..., retain_graph=True)`` and updates its weights with its own
optimiser, then hands ``train.fit`` the loss weighted by the pre-update weights, exactly the order of
the paper's Algorithm 1 (model step with w(t), weights renormalised to sum T afterwards).

Metrics are per task and scale-free, so tasks on very different scales can be averaged:
regression: test MSE / variance of the target (1 = predicting the mean); classification: error rate
/ (1 - 1/K) (1 = chance).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from replikit import packed, train

TaskKind = Literal["regression", "classification"]


@dataclass(frozen=True)
class Task:
    """One output of the multi-task network: ``out_dim`` units, a squared or a cross-entropy loss."""

    name: str
    kind: TaskKind
    out_dim: int


# =================================== the network ===================================================


class MultiTaskNet(nn.Module):
    """``trunk`` shared by all tasks, then one linear head per task; ``forward`` returns a list."""

    def __init__(self, trunk: nn.Module, trunk_dim: int, tasks: Sequence[Task], zero_heads: bool = True):
        super().__init__()
        self.trunk = trunk
        self.heads = nn.ModuleList(nn.Linear(trunk_dim, t.out_dim) for t in tasks)
        self.tasks = list(tasks)
        if zero_heads:  # every task starts at the mean predictor, whatever its scale (L_i(0) = var(y_i))
            for head in self.heads:
                nn.init.zeros_(head.weight)
                nn.init.zeros_(head.bias)

    fused = False  # a pack's template sets it (fit_pack): every head in one matmul

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        h = self.trunk(x)
        if self.fused and len(self.heads) > 1:  # the same outputs, one matmul instead of one per head
            w = torch.cat([head.weight for head in self.heads])
            b = torch.cat([head.bias for head in self.heads])
            return list(F.linear(h, w, b).split([t.out_dim for t in self.tasks], -1))
        return [head(h) for head in self.heads]

    def shared_layer(self) -> list[nn.Parameter]:
        """The last shared layer's weights: where GradNorm measures per-task gradient norms (paper: W)."""
        for module in reversed(list(self.trunk.modules())):
            if isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d)):
                return [module.weight]
        raise ValueError("the trunk has no Linear/Conv layer to measure gradients on")


def mlp_trunk(in_dim: int, width: int, depth: int) -> nn.Sequential:
    """``depth`` fully connected ReLU layers of ``width`` units (GradNorm's toy trunk: 4 x 100).

    He (Kaiming) initialisation, zero biases: PyTorch's default init shrinks the signal by about 1/sqrt(3)
    per ReLU layer, which leaves a 4-layer trunk's outputs (and its gradients) near zero at the start.
    """
    layers: list[nn.Module] = [nn.Flatten()]
    d = in_dim
    for _ in range(depth):
        layer = nn.Linear(d, width)
        nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
        nn.init.zeros_(layer.bias)
        layers += [layer, nn.ReLU()]
        d = width
    return nn.Sequential(*layers)


def build(
    model: str,
    input_shape: tuple[int, ...],
    tasks: Sequence[Task],
    width: int,
    depth: int,
    zero_heads: bool = True,
) -> MultiTaskNet:
    """``mlp`` (a ``depth`` x ``width`` ReLU trunk) or a trunk of :func:`replikit.models.build`."""
    if model == "mlp":
        return MultiTaskNet(mlp_trunk(math.prod(input_shape), width, depth), width, tasks, zero_heads)
    from replikit import models

    split = models.build(model, input_shape, 1, width=width, depth=depth)
    return MultiTaskNet(split.features, split.feature_dim, tasks, zero_heads)


def task_losses(
    outputs: Sequence[torch.Tensor], targets: Sequence[torch.Tensor], tasks: Sequence[Task]
) -> torch.Tensor:
    """Vector [T] of per-task losses: mean squared error (regression) or cross-entropy (classification)."""
    losses = []
    for out, y, task in zip(outputs, targets, tasks):
        if task.kind == "classification":
            losses.append(F.cross_entropy(out.float(), y))
        else:
            losses.append(F.mse_loss(out.float().reshape(y.shape), y))
    return torch.stack(losses)


# ============================ ALGO LOGIC: task weightings ==========================================


class Weighting:
    """Equal weights w_i = 1 (the baseline every paper compares against)."""

    name = "equal"

    def __init__(self, n_tasks: int):
        self.n_tasks = n_tasks

    def parameters(self) -> list[nn.Parameter]:
        return []

    def weights(self) -> torch.Tensor:
        return torch.ones(self.n_tasks, device=self.device)

    def combine(self, losses: torch.Tensor) -> torch.Tensor:
        return (self.weights() * losses).sum()

    def state_dict(self) -> dict:
        """What a checkpoint keeps of the weighting (:mod:`replikit.resume`): nothing for constant weights."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass

    @property
    def device(self) -> torch.device:
        return getattr(self, "_device", torch.device("cpu"))

    def to(self, device: torch.device | str) -> Weighting:
        """Move every tensor the weighting holds to ``device`` (parameters in place: optimisers keep them)."""
        self._device = torch.device(device)
        for name, value in vars(self).items():
            if isinstance(value, torch.Tensor) and value.is_leaf and value.requires_grad:
                value.data = value.data.to(device)  # learnable: the same tensor, so optimisers keep it
            elif isinstance(value, torch.Tensor):
                setattr(self, name, value.to(device))
        return self


Equal = Weighting


class Fixed(Weighting):
    """Constant hand-set weights (one point of a grid search)."""

    name = "fixed"

    def __init__(self, weights: Sequence[float]):
        super().__init__(len(weights))
        self._w = torch.as_tensor(list(weights), dtype=torch.float32)

    def weights(self) -> torch.Tensor:
        return self._w.clone()


def uncertainty_loss(losses: torch.Tensor, log_vars: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
    """Kendall et al. (2018), eqs. 7 and 10, with s_i = log sigma_i^2:

        sum_i  c_i exp(-s_i) L_i + s_i / 2
    c_i = 1/2 for a regression (Gaussian likelihood: 1/(2 sigma^2) L + log sigma),
    c_i = 1 for a classification (scaled softmax: 1/sigma^2 L + log sigma).
    The optimum over s_i is s_i* = log(2 c_i L_i): each task's weight settles at 1/(2 L_i).
    Sums over the last axis: one total per row of a pack's (members, T) losses.
    """
    return (factors * torch.exp(-log_vars) * losses + 0.5 * log_vars).sum(-1)


class Uncertainty(Weighting):
    """Learned homoscedastic uncertainty: one log-variance per task, trained with the model."""

    name = "uncertainty"

    def __init__(self, tasks: Sequence[Task], init_log_var: float = 0.0):
        super().__init__(len(tasks))
        self.log_vars = nn.Parameter(torch.full((len(tasks),), float(init_log_var)))
        self.factors = torch.tensor([0.5 if t.kind == "regression" else 1.0 for t in tasks])

    def parameters(self) -> list[nn.Parameter]:
        return [self.log_vars]

    def weights(self) -> torch.Tensor:
        """Effective weights c_i / sigma_i^2 multiplying the raw task losses."""
        return (self.factors * torch.exp(-self.log_vars)).detach()

    def state_dict(self) -> dict:
        return {"log_vars": self.log_vars.detach()}

    def load_state_dict(self, state: dict) -> None:
        with torch.no_grad():
            self.log_vars.copy_(state["log_vars"])

    def combine(self, losses: torch.Tensor) -> torch.Tensor:
        if self.log_vars.device != losses.device:
            raise RuntimeError("move the weighting with .to(device) before training")
        return uncertainty_loss(losses, self.log_vars, self.factors)


def per_task_grad_norms(losses: torch.Tensor, shared: Sequence[torch.Tensor]) -> torch.Tensor:
    """||grad_W L_i||_2 for each task i, over the shared parameters W (graph kept for the model step).

    One batched backward pass (``is_grads_batched``: the T rows of the identity as output gradients)
    instead of T separate ones.
    """
    eye = torch.eye(len(losses), device=losses.device, dtype=losses.dtype)
    grads = torch.autograd.grad(
        losses, list(shared), grad_outputs=eye, retain_graph=True, is_grads_batched=True
    )
    sq = sum((g.float() ** 2).flatten(1).sum(1) for g in grads)
    return torch.sqrt(sq).detach()


def gradnorm_targets(
    norms: torch.Tensor, w: torch.Tensor, losses: torch.Tensor, initial: torch.Tensor, alpha: float
) -> torch.Tensor:
    """Chen et al. (2018), eq. 2's target  G_bar * r_i^alpha  (a constant in the gradient step).

    G_i = w_i ||grad_W L_i||; G_bar = mean_i G_i; L~_i = L_i / L_i(0); r_i = L~_i / mean_j L~_j.
    A task that has trained less (larger r_i) is given a larger target gradient norm. Over the last axis:
    a pack's (members, T) rows are independent.
    """
    g = w * norms
    ratio = losses / initial
    r = ratio / ratio.mean(-1, keepdim=True)
    return g.mean(-1, keepdim=True) * r.pow(alpha)


def gradnorm_weight_grad(
    norms: torch.Tensor, w: torch.Tensor, losses: torch.Tensor, initial: torch.Tensor, alpha: float
) -> torch.Tensor:
    """d L_grad / d w_i for L_grad = sum_i |G_i - target_i| with the target held constant.

    Since G_i = w_i ||grad_W L_i||, the gradient is sign(G_i - target_i) * ||grad_W L_i||: a task whose
    weighted gradient is above its target has its weight pushed down, one below pushed up.
    """
    target = gradnorm_targets(norms, w, losses, initial, alpha)
    return torch.sign(w * norms - target) * norms


def renormalize(w: torch.Tensor, floor: float = 1e-6) -> torch.Tensor:
    """Clamp to positive and rescale so that sum_i w_i = T (the paper's renormalisation; row by row for a
    pack's (members, T) weights)."""
    w = w.clamp_min(floor)
    return w * (w.shape[-1] / w.sum(-1, keepdim=True))


class GradNorm(Weighting):
    """Weights learned to equalise the tasks' gradient norms on the last shared layer, at rates alpha."""

    name = "gradnorm"

    def __init__(self, n_tasks: int, shared: Sequence[torch.Tensor], alpha: float, lr: float):
        super().__init__(n_tasks)
        self.shared = list(shared)
        self.alpha = alpha
        self._device = self.shared[0].device
        self.w = torch.ones(n_tasks, device=self._device, requires_grad=True)
        # the weights' own optimiser: Adam, so their step size does not depend on the losses' scale
        self.opt = train.build_optimizer([self.w], "adam", lr, self._device)  # fused on CUDA
        self.initial: torch.Tensor | None = None
        self.trace: list[torch.Tensor] = []  # the weights after every step, for the figures

    def weights(self) -> torch.Tensor:
        return self.w.detach().clone()

    def state_dict(self) -> dict:
        return _gradnorm_state(self)

    def load_state_dict(self, state: dict) -> None:
        _load_gradnorm_state(self, state, self.device)

    def combine(self, losses: torch.Tensor) -> torch.Tensor:
        detached = losses.detach().float()
        if self.initial is None:  # L_i(0): the losses of the very first batch
            self.initial = detached.clamp_min(1e-12)
        norms = per_task_grad_norms(losses, self.shared)
        w_now = self.w.detach().clone()
        self.w.grad = gradnorm_weight_grad(norms, w_now, detached, self.initial, self.alpha)
        self.opt.step()
        with torch.no_grad():
            self.w.copy_(renormalize(self.w))
        self.trace.append(self.w.detach().clone())
        return (w_now * losses).sum()  # the model steps with w(t)


def _gradnorm_state(w) -> dict:
    """A GradNorm weighting's (one run's or a pack's) state: its weights, their optimiser, the first
    batch's losses and the trace of weights."""
    return {
        "w": w.w.detach(),
        "opt": None if w.opt is None else w.opt.state_dict(),
        "initial": w.initial,
        "trace": torch.stack(w.trace) if w.trace else None,  # one tensor: one entry per step is slow to save
    }


def _load_gradnorm_state(w, state: dict, device) -> None:
    with torch.no_grad():
        w.w.copy_(state["w"])
    if w.opt is not None:
        w.opt.load_state_dict(state["opt"])
    w.initial = None if state["initial"] is None else state["initial"].to(device)
    w.trace = [] if state["trace"] is None else list(state["trace"].to(device).unbind())


# =================================== training ======================================================


def normalized_errors(
    outputs: Sequence[torch.Tensor],
    targets: Sequence[torch.Tensor],
    tasks: Sequence[Task],
    target_var: Sequence[float],
) -> np.ndarray:
    """Scale-free error per task: MSE / var(target) (regression), error / (1 - 1/K) (classification)."""
    out = []
    for o, y, task, var in zip(outputs, targets, tasks, target_var):
        if task.kind == "classification":
            err = (o.argmax(1) != y).float().mean().item()
            out.append(err / (1.0 - 1.0 / task.out_dim))
        else:
            out.append(F.mse_loss(o.float().reshape(y.shape), y).item() / var)
    return np.asarray(out)


@torch.no_grad()
def predict(model: MultiTaskNet, x: torch.Tensor, batch_size: int = 4096) -> list[torch.Tensor]:
    """All task outputs on ``x`` in eval mode, in large batches."""
    was = model.training
    model.eval()
    chunks = [model(x[i : i + batch_size]) for i in range(0, len(x), batch_size)]
    model.train(was)
    return [torch.cat([c[t].float() for c in chunks]) for t in range(len(model.heads))]


def target_variances(targets: Sequence[torch.Tensor], tasks: Sequence[Task]) -> list[float]:
    return [float(y.float().var()) if t.kind == "regression" else 1.0 for y, t in zip(targets, tasks)]


def fit(
    model: MultiTaskNet,
    weighting: Weighting,
    x: torch.Tensor,
    targets: Sequence[torch.Tensor],
    *,
    epochs: int,
    batch_size: int,
    seed: int,
    lr: float,
    optimizer: str,
    weight_decay: float = 0.0,
    weighting_lr: float | None = None,
    evaluate=None,
    desc: str = "multitask",
    max_grad_norm: float | None = None,
) -> list[dict[str, float]]:
    """Train ``model`` on all tasks with ``weighting`` through :func:`replikit.train.fit`.

    weighting_lr: a learning rate of its own for the weighting's learnable parameters (uncertainty's
        log-variances; no weight decay on them); None: the model's.
    max_grad_norm: clip the global gradient norm (``train.fit``); None: no clipping.
    The history gets, per epoch, each task's mean training loss (``loss_<i>``) and weight (``w_<i>``).
    """
    tasks = model.tasks
    weighting.to(x.device)  # the one place a weighting meets the run's device

    def step(idx: torch.Tensor, p: float):
        losses = task_losses(model(x[idx]), [y[idx] for y in targets], tasks)
        total = weighting.combine(losses)
        logs = {f"loss_{i}": losses[i] for i in range(len(tasks))}
        w = weighting.weights()
        logs.update({f"w_{i}": w[i] for i in range(len(tasks))})
        return total, logs

    groups: list[dict] = [{"params": list(model.parameters()), "weight_decay": weight_decay}]
    if weighting.parameters():
        own = {} if weighting_lr is None else {"lr": weighting_lr, "weight_decay": 0.0}
        groups.append({"params": weighting.parameters(), "weight_decay": weight_decay, **own})
    # foreach on the CPU: one update over the trunk's and the T heads' tensors (the per-tensor loop was a
    # fifth of a T = 10 run); each group carries its own weight decay
    params = train.build_optimizer(groups, optimizer, lr, x.device, foreach=True)
    return train.fit(
        step,
        params,
        len(x),
        epochs=epochs,
        batch_size=batch_size,
        seed=seed,
        device=x.device,
        lr=lr,
        optimizer=optimizer,
        weight_decay=weight_decay,
        evaluate=evaluate,
        models=[model],
        desc=desc,
        max_grad_norm=max_grad_norm,
        resume_state={"weighting": weighting},
    )


# =================================== packed runs (GPUs) ============================================


def pack_task_losses(
    outputs: Sequence[torch.Tensor], targets: Sequence[torch.Tensor], tasks: Sequence[Task]
) -> torch.Tensor:
    """:func:`task_losses` for a pack: outputs (members, B, out_dim) per task, targets (members, B, ...)
    (shared targets indexed with the pack's (members, B) indices) -> (members, T) per-member losses."""
    losses = []
    for out, y, task in zip(outputs, targets, tasks):
        if task.kind == "classification":
            losses.append(packed.cross_entropy(out, y))
        else:
            losses.append((out.float().reshape(y.shape) - y).pow(2).flatten(1).mean(1))
    return torch.stack(losses, dim=1)


def pack_regression_losses(outputs: Sequence[torch.Tensor], targets: torch.Tensor) -> torch.Tensor:
    """:func:`pack_task_losses` for regression tasks of one output size, at once: ``targets`` stacked
    (T, members, B, out_dim) -> (members, T) mean squared errors, a handful of operations for any T."""
    out = torch.stack(list(outputs)).float().reshape(targets.shape)
    return (out - targets).pow(2).flatten(2).mean(2).T


class PackWeighting:
    """The weightings of a pack's members as stacked (width, T) tensors, one row per slot.

    Equal and Fixed rows keep their constant weights; Uncertainty rows learn their log-variances (a
    stacked leaf the pack's optimiser updates, at the weighting's own learning rate); GradNorm rows update
    their weights with their own Adam from each member's per-task gradient norms on its own slice of the
    shared layer, in the order of the paper's Algorithm 1, exactly as :meth:`GradNorm.combine` does for
    one run. Padded slots copy the first member's weighting.
    """

    def __init__(self, weightings: Sequence[Weighting], width: int, tasks: Sequence[Task], device):
        n_tasks = len(tasks)
        rows = list(weightings) + [weightings[0]] * (width - len(weightings))
        learned = (Uncertainty, GradNorm)
        self.fixed = torch.stack(
            [torch.ones(n_tasks) if isinstance(w, learned) else w.weights().cpu() for w in rows]
        ).to(device)
        self.unc = torch.tensor([isinstance(w, Uncertainty) for w in rows], device=device)
        self.gn = torch.tensor([isinstance(w, GradNorm) for w in rows], device=device)
        self.any_unc, self.any_gn = bool(self.unc.any()), bool(self.gn.any())
        self.factors = torch.tensor([0.5 if t.kind == "regression" else 1.0 for t in tasks], device=device)
        self.log_vars = torch.stack(
            [w.log_vars.detach().cpu() if isinstance(w, Uncertainty) else torch.zeros(n_tasks) for w in rows]
        ).to(device)
        self.log_vars.requires_grad_(self.any_unc)
        gns = [w for w in rows if isinstance(w, GradNorm)]
        if len({w.opt.param_groups[0]["lr"] for w in gns}) > 1:
            raise ValueError("the GradNorm members of a pack must share their weights' learning rate")
        self.alpha = torch.tensor([w.alpha if isinstance(w, GradNorm) else 0.0 for w in rows], device=device)
        self.w = torch.ones(width, n_tasks, device=device, requires_grad=True)
        # the suite's builder: on CUDA one fused kernel a step (its step count on the device: no host read)
        self.opt = (
            train.build_optimizer([self.w], "adam", gns[0].opt.param_groups[0]["lr"], torch.device(device))
            if gns
            else None
        )
        self.initial: torch.Tensor | None = None
        self.trace: list[torch.Tensor] = []
        self.loss_sum = torch.zeros(width, n_tasks, device=device)
        self.w_sum = torch.zeros(width, n_tasks, device=device)
        self.steps = 0

    def weights(self) -> torch.Tensor:
        """Every slot's current effective weights (width, T), as each weighting's ``weights()``."""
        w = torch.where(self.gn[:, None], self.w.detach(), self.fixed)
        return torch.where(self.unc[:, None], self.factors * torch.exp(-self.log_vars.detach()), w)

    def combine(self, losses: torch.Tensor, shared: torch.Tensor) -> torch.Tensor:
        """(width,) totals to back-propagate from the (width, T) losses; ``shared``: the stacked last shared
        layer's weights, where GradNorm rows measure their per-task gradient norms."""
        w_model = self.fixed
        if self.any_gn:
            detached = losses.detach().float()
            if self.initial is None:  # L_i(0): each member's losses on its very first batch
                self.initial = detached.clamp_min(1e-12)
            n_tasks = losses.shape[1]
            eye = torch.eye(n_tasks, device=losses.device, dtype=losses.dtype)
            outs = eye[:, None, :].expand(n_tasks, *losses.shape)  # task i of every member at once
            (g,) = torch.autograd.grad(
                losses, [shared], grad_outputs=outs, retain_graph=True, is_grads_batched=True
            )
            norms = torch.sqrt((g.float() ** 2).flatten(2).sum(2)).T.detach()  # (width, T)
            w_now = self.w.detach().clone()
            grad = gradnorm_weight_grad(norms, w_now, detached, self.initial, self.alpha[:, None])
            self.w.grad = torch.where(self.gn[:, None], grad, torch.zeros_like(grad))
            self.opt.step()
            with torch.no_grad():
                self.w.copy_(renormalize(self.w))
            self.trace.append(self.w.detach().clone())
            w_model = torch.where(self.gn[:, None], w_now, self.fixed)  # the model steps with w(t)
        totals = (w_model * losses).sum(-1)
        if self.any_unc:
            totals = torch.where(self.unc, uncertainty_loss(losses, self.log_vars, self.factors), totals)
        self.loss_sum += losses.detach().float()
        self.w_sum += self.weights()
        self.steps += 1
        return totals

    def state_dict(self) -> dict:
        """The GradNorm rows' state (the log-variances are the pack's own: its checkpoint holds them); the
        per-epoch sums are empty whenever a pack checkpoints, after its epoch's logs."""
        return _gradnorm_state(self)

    def load_state_dict(self, state: dict) -> None:
        _load_gradnorm_state(self, state, self.w.device)

    def epoch_logs(self, members: int) -> list[dict[str, float]]:
        """Each member's mean task losses and weights over the epoch (``loss_<i>``, ``w_<i>``), as
        :func:`fit`'s history has them; the sums restart."""
        loss, w = (self.loss_sum / self.steps).tolist(), (self.w_sum / self.steps).tolist()
        self.loss_sum.zero_(), self.w_sum.zero_()
        self.steps = 0
        return [
            {**{f"loss_{i}": v for i, v in enumerate(loss[m])}, **{f"w_{i}": v for i, v in enumerate(w[m])}}
            for m in range(members)
        ]


def fit_pack(
    models: Sequence[MultiTaskNet],
    weightings: Sequence[Weighting],
    x: torch.Tensor,
    targets: Sequence[torch.Tensor],
    *,
    width: int,
    epochs: int,
    batch_size: int,
    seed: int,
    lr: float | Sequence[float],
    optimizer: str,
    weight_decay: float = 0.0,
    weighting_lr: float | None = None,
    desc: str = "multitask pack",
) -> list[dict]:
    """:func:`fit` for up to ``width`` members at once (:func:`replikit.packed.fit`, one vmapped model).

    The members share the data and the batch stream (``seed``: each draws the stream :func:`fit` draws);
    each has its own model (its own initialisation), weighting and learning rate (``lr``: one, or one per
    member). A member that diverges is recorded, not raised: its history ends with a non-finite
    ``train_loss``. Returns, per member: ``state`` (load it into the member's model), ``history`` (as
    :func:`fit`'s), ``weights`` (its weighting's final ``weights()``) and ``trace`` (a GradNorm member's
    weights after every step; empty for the others).
    """
    tasks = models[0].tasks
    if any(m.tasks != tasks for m in models):
        raise ValueError("the members of a pack must have the same tasks")
    device = x.device
    shared_ref = models[0].shared_layer()[0]
    shared_name = next(k for k, p in models[0].named_parameters() if p is shared_ref)
    pack = PackWeighting(weightings, width, tasks, device)
    extra = []
    if pack.any_unc:  # as fit's optimiser groups: the model's rate and decay, or a rate of its own and none
        if weighting_lr is None and not isinstance(lr, int | float) and len(set(lr)) > 1:
            raise ValueError("learned weightings at per-member model rates need a weighting_lr of their own")
        own = {} if weighting_lr is None else {"lr": weighting_lr, "weight_decay": 0.0}
        extra.append({"params": [pack.log_vars], "weight_decay": weight_decay, **own})

    # regression tasks of one output size (GradNorm's): their targets stacked, one index and one loss
    # for all tasks a step
    alike = (
        len(tasks) > 1 and all(t.kind == "regression" for t in tasks) and len({t.out_dim for t in tasks}) == 1
    )
    stacked = torch.stack(list(targets)) if alike and len({y.shape for y in targets}) == 1 else None

    def loss(outputs, _labels, idx, params):
        if stacked is not None:
            losses = pack_regression_losses(outputs, stacked[:, idx])
        else:
            losses = pack_task_losses(outputs, [y[idx] for y in targets], tasks)
        return pack.combine(losses, params[shared_name])

    models[0].fused = True  # the pack's template (packed.fit copies it): all heads in one matmul
    try:
        states, histories = packed.fit(
            models,
            [packed.Batches(torch.arange(len(x), device=device), batch_size, seed).next for _ in models],
            x,
            None,
            epochs=epochs,
            steps_per_epoch=max(1, len(x) // batch_size),
            width=width,
            lr=lr,
            optimizer=optimizer,
            weight_decay=weight_decay,
            loss=loss,
            on_epoch=lambda epoch, predict: pack.epoch_logs(len(models)),
            extra_params=extra,
            divergence="record",
            desc=desc,
            resume_state={"weighting": pack},
        )
    finally:
        del models[0].fused  # back to the class default: outside packs, one matmul per head as before
    final = pack.weights()
    return [
        {
            "state": state,
            "history": history,
            "weights": final[m],
            "trace": [w[m] for w in pack.trace] if isinstance(weightings[m], GradNorm) else [],
        }
        for m, (state, history) in enumerate(zip(states, histories))
    ]


def training_rates(
    model: MultiTaskNet, x: torch.Tensor, targets: Sequence[torch.Tensor], initial: torch.Tensor
) -> torch.Tensor:
    """r_i = L_i(now) / L_i(0) on the whole training set: how far each task has come (lower = further)."""
    with torch.no_grad():
        losses = task_losses(predict(model, x), targets, model.tasks)
    return losses / initial


def full_losses(model: MultiTaskNet, x: torch.Tensor, targets: Sequence[torch.Tensor]) -> torch.Tensor:
    with torch.no_grad():
        return task_losses(predict(model, x), targets, model.tasks)


# =================================== selection on validation =======================================


def best_by_validation(table: pd.DataFrame, by: Sequence[str], val_col: str) -> pd.DataFrame:
    """Per group of ``by``, the row with the lowest ``val_col`` (validation data only: never a test column).

    Rows whose validation score is not finite (a run that diverged) never win; a group with no finite row
    is dropped. Used for the learning rate of every arm and for the fixed-weight grid search.
    """
    ok = table[np.isfinite(table[val_col].to_numpy(dtype=float))]
    return ok.loc[ok.groupby(list(by), sort=False)[val_col].idxmin()].reset_index(drop=True)


# =================================== image-derived tasks ===========================================

IMAGE_STATS = ("mass", "row_centroid", "col_centroid", "contrast", "row_spread", "col_spread")


def image_statistic(x: np.ndarray, stat: str) -> np.ndarray:
    """A per-image scalar computed from the pixels (N, C, H, W): regression targets for a multi-task stand-in.

    mass: mean intensity; row/col_centroid: intensity-weighted mean row/column in [0, 1];
    contrast: pixel standard deviation; row/col_spread: intensity-weighted std of the row/column.
    """
    img = x.mean(axis=1, dtype=np.float64)  # grey: (N, H, W), without a float64 copy of every channel
    n, h, w = img.shape
    mass = img.sum(axis=(1, 2)) + 1e-8
    rows = np.linspace(0.0, 1.0, h)[None, :, None]
    cols = np.linspace(0.0, 1.0, w)[None, None, :]
    if stat == "mass":
        out = img.mean(axis=(1, 2))
    elif stat == "contrast":
        out = img.reshape(n, -1).std(axis=1)
    elif stat in ("row_centroid", "row_spread", "col_centroid", "col_spread"):
        grid = rows if stat.startswith("row") else cols
        centroid = (img * grid).sum(axis=(1, 2)) / mass
        if stat.endswith("centroid"):
            out = centroid
        else:
            c = centroid[:, None, None]
            out = np.sqrt((img * (grid - c) ** 2).sum(axis=(1, 2)) / mass)
    else:
        raise ValueError(f"unknown image statistic {stat!r} (known: {', '.join(IMAGE_STATS)})")
    return out.astype(np.float32)
