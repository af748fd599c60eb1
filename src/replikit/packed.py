"""Packed runs: many small runs of one architecture trained as one model, so that they fill a GPU.

A default-profile run is a stream of tiny kernels: on a GPU it is launch-bound, and worker processes that
share the GPU take turns rather than overlap (``benchmarks/gpu_packing.py``: 1.1x for 8 processes). A
*pack* instead stacks the parameters of ``width`` models (``torch.func.stack_module_state``) and trains
them as one: a forward vmapped over (parameters, batch), one backward of the summed member losses (the
members share nothing, so each slice of a stacked parameter gets exactly its own gradient) and one
optimiser over the stacked tensors (Adam and SGD are elementwise, so that is ``width`` independent
optimisers with the same hyper-parameters). On an H200, 32 packed runs of the suite's 1-D CNN took
0.039 s each against 0.49 s one after another (12.6x; ``benchmarks/gpu_vmap.py``).

Each member keeps what makes it a run of its own: its initialisation (the caller builds its model) and
its batch stream (its own ``next_batch``). What a member's numbers must not depend on is which other runs
share its pack, so **a pack always has ``width`` slots**: a pack with fewer members is padded with copies
of the first, whose results are dropped. Every kernel then sees the same shapes however many real members
there are, and each member's numbers are the same bit for bit (tested on the CPU; on an H200 a pack of 16
inside one of 32 was bit-identical, while packs of 4 and 8 were not, so widths below 16 can differ by
pack size there). A packed member is *not* bit-identical to the same run unpacked: batched kernels sum
in another order, so packing is another, equally valid draw of the same seeds, and ``width`` belongs in
the run store's key (the methods pass it in the task).

Limits: one architecture per pack, no dropout. Batch norm packs: each member normalises by its own batch
and keeps its own running statistics, and the pack switches between training and evaluation modes as
:func:`replikit.train.fit` does. Inputs are in memory, shared or gathered per member by ``inputs``.
Labels may differ per member (each seed's own label noise), and a method may bring its own loss over the
whole pack's outputs (ELR's, with per-member targets). Members may also differ in learning rate, inputs
(a task's own data, an augmentation's own draws) and learned state beyond the model (``extra_params``).
Methods opt in with a ``pack`` knob (dann, data_diet, downstream_scaling, elr, gradnorm and
uncertainty_weighting through :func:`replikit.families.multitask.fit_pack`, model_soups, rotnet, sla,
and the merging methods' fine-tunes); a pack can stop early, member by member (``best``);
:class:`Batches` gives a member the very batch stream :func:`replikit.train.fit` would draw for its seed.

``pack: auto`` (the knob's default, :func:`resolve_width`) packs :data:`AUTO_WIDTH` runs on CUDA and none
on the CPU. On the CPU packing does not pay (nine methods at these widths took 2.4x as long on 2 cores as
runs one at a time: see docs/gpu.md), and the
CPU's committed numbers stay those of runs one at a time; on CUDA a run is already another draw of its
seed than on the CPU (other kernels, another summation order), so packing there costs nothing in what
the numbers mean and removes the launch-bound single run.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence

import pydantic
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from replikit import resume, train
from replikit.train import DivergenceError, build_optimizer, progress

AUTO_WIDTH = 16
"""``pack: auto``'s width on CUDA: at 16 and above a member's numbers on an H200 did not depend on the pack's
size (16 inside 32 bit-identical; 4 inside 8 not), and 16 holds data_diet's 15 arms of a seed."""


def resolve_width(pack: int | str, device: str, packable: bool = True, auto: int = AUTO_WIDTH) -> int:
    """A ``pack`` knob's width: an int as given; ``"auto"``: ``auto`` (a method whose packs hold fewer
    runs may ask for a narrower pack) where ``device`` resolves to CUDA and the model can be packed
    (``packable``: no batch norm, no dropout), otherwise 0 (one run at a time). Decided where the config
    is validated, so the recorded config holds the width that ran."""
    if isinstance(pack, str) and pack != "auto" and not pack.strip().isdigit():
        raise ValueError(f"pack: {pack!r} is neither a width (an int, 0 = no packing) nor 'auto'")
    if pack != "auto":
        return pack  # type: ignore[return-value]  # an int: pydantic checks its bounds
    on_cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    return auto if packable and on_cuda else 0


def chunks(items: Sequence, width: int, key: Callable | None = None) -> list[tuple]:
    """``items`` grouped by ``key(item)`` (groups in order of first appearance, items in their order; one
    group without a key), each group cut into runs of at most ``width``: a method's packs, as (key, items)
    pairs."""
    groups: dict = {}
    for item in items:
        groups.setdefault(None if key is None else key(item), []).append(item)
    return [(k, g[i : i + width]) for k, g in groups.items() for i in range(0, len(g), width)]


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Each slot's mean cross-entropy, as ``F.cross_entropy`` of its own logits: (width, B, C, ...) logits
    against (width, B, ...) labels -> (width,), in one call for the whole pack."""
    ce = F.cross_entropy(logits.float().flatten(0, 1), labels.flatten(0, 1), reduction="none")
    return ce.view(labels.shape).flatten(1).mean(1)


def knob(holds: str, auto: int = AUTO_WIDTH, most: int = 64):
    """A method config's ``pack`` field: ``holds`` says what one pack trains together; the default
    ``"auto"`` becomes a width through the config's :func:`auto_width` validator."""
    return pydantic.Field(
        "auto",
        validate_default=True,
        ge=0,
        le=most,
        description=f"train {holds} as packs of this many runs in one vmapped model (replikit.packed; for "
        f"GPUs); 0: one run at a time; auto: {auto} on CUDA, 0 on the CPU. A packed run is another draw of "
        "the same seed: its numbers depend on the width, never on which runs share its pack",
    )


def auto_width(packable: Callable[[dict], bool], auto: int = AUTO_WIDTH):
    """The validator that resolves a config's ``pack`` (:func:`resolve_width`): ``packable(values)`` sees
    the fields declared before ``pack`` (the model, the device) and says whether ``auto`` packs here."""

    def _resolve_pack(cls, v, info: pydantic.ValidationInfo) -> int:
        return resolve_width(v, info.data.get("device", "auto"), packable(info.data), auto)

    return pydantic.field_validator("pack", mode="before")(_resolve_pack)


class Batches:
    """Batches of indices drawn from ``subset`` pass by pass (reshuffled each pass, ragged tail dropped),
    on its device. With ``subset = arange(n)`` and the run's seed this is exactly the stream
    :func:`replikit.train.fit` draws (one ``randperm`` per epoch from a generator seeded ``seed``), so a
    packed member sees its unpacked run's batches."""

    def __init__(self, subset: torch.Tensor, batch_size: int, seed: int):
        if len(subset) == 0:
            raise ValueError("no examples to draw batches from")
        # a subset smaller than a batch is one batch, reshuffled each pass: what train.fit's slice gives
        self.subset, self.batch_size = subset, min(batch_size, len(subset))
        self.gen = torch.Generator(device=subset.device).manual_seed(seed)
        self.perm, self.pos = self._shuffle(), 0

    def _shuffle(self) -> torch.Tensor:
        return self.subset[torch.randperm(len(self.subset), device=self.subset.device, generator=self.gen)]

    def state_dict(self) -> dict:
        """Where the stream stands (its generator, this pass's order, the position): what a checkpoint
        keeps so that a resumed run draws the batches an uninterrupted one would."""
        return {"gen": self.gen.get_state(), "perm": self.perm.clone(), "pos": self.pos}

    def load_state_dict(self, state: dict) -> None:
        self.gen.set_state(state["gen"])
        self.perm, self.pos = state["perm"].to(self.subset.device), state["pos"]

    def next(self) -> torch.Tensor:
        if self.pos + self.batch_size > len(self.perm):
            self.perm, self.pos = self._shuffle(), 0
        idx = self.perm[self.pos : self.pos + self.batch_size]
        self.pos += self.batch_size
        return idx


def check_packable(model: nn.Module) -> None:
    """Raise when ``model`` holds what a pack would get wrong: dropout (vmap would draw one mask for every
    member, or none). Batch norm packs: each member normalises by its own batch, and its running
    statistics are its own slice of the stacked buffers, updated in place."""
    for m in model.modules():
        if isinstance(m, nn.Dropout) and m.p > 0:
            raise ValueError(f"{type(m).__name__} cannot be packed (one random mask per member is needed)")


def fit(
    models: Sequence[nn.Module],
    batches: Sequence[Callable[[], torch.Tensor]],
    x: torch.Tensor,
    y: torch.Tensor | None,
    *,
    epochs: int,
    steps_per_epoch: int,
    width: int,
    lr: float | Sequence[float],
    optimizer: str = "adam",
    weight_decay: float = 0.0,
    momentum: float = 0.9,
    lr_schedule: Callable[[float], float] | None = None,
    evaluate: dict[str, tuple[torch.Tensor, torch.Tensor]] | None = None,
    loss: Callable[..., torch.Tensor] | None = None,
    on_epoch: Callable[[int, Callable[[torch.Tensor], torch.Tensor]], list[dict[str, float]]] | None = None,
    extra_params: Sequence[dict] = (),
    inputs: Callable[[torch.Tensor], torch.Tensor] | None = None,
    divergence: str = "raise",
    desc: str = "pack",
    resume_state: dict | None = None,
    best: str | None = None,
) -> tuple[list[dict[str, torch.Tensor]], list[list[dict[str, float]]]]:
    """Train ``models`` (each with its batch stream ``batches[i]``: indices into ``x``) as one pack.

    ``y``: the labels, shared (n,) or one row per member (members, n), e.g. each seed's own label noise.
    Cross-entropy on ``x[idx]``, ``y[idx]``, unless ``loss(logits, labels, idx, params)`` is given: the
    whole pack's logits (width, B, classes; any structure the model returns, e.g. a list of task outputs),
    (width, B) labels (None when ``y`` is None: the loss indexes its own targets with ``idx``), indices
    and the stacked parameters in, (width,) losses out, one per slot (a method's own objective, with any
    per-member state it keeps, indexed by slot). ``epochs`` x ``steps_per_epoch`` steps.

    ``lr``: one learning rate, or one per member (the optimiser steps at rate 1 and each member's update is
    rescaled by its own rate: exact in arithmetic for Adam and SGD, whose step is proportional to the
    rate, and a member's numbers then depend on its own rate only, not on its pack-mates').
    ``lr_schedule(p)`` multiplies every group's learning rate at progress p, as in
    :func:`replikit.train.fit`. ``extra_params``: more optimiser groups (``{"params": [...], "lr": ...,
    "weight_decay": ...}``) of stacked per-slot tensors a method's loss learns too (uncertainty's
    log-variances). ``evaluate``: named (x, y) sets whose accuracy (``<name>_acc``) joins each epoch's
    history row; ``on_epoch(epoch, predict)`` adds a method's own per-member entries (a list of dicts, one
    per member), where ``predict(x)`` gives every slot's outputs on ``x``. ``inputs(idx)``: the pack's
    (width, B, ...) inputs for its (width, B) indices, when a member's batch is more than ``x[idx]`` (its
    own augmentation, drawn from its own generator); padded slots may take anything.
    ``divergence``: ``raise`` a DivergenceError when a member's epoch loss is not finite, or ``record``
    it: that member's history ends with the non-finite row and the others train on (members share
    nothing, so a diverged slot cannot reach another's numbers).
    ``resume_state``: as :func:`replikit.train.fit`'s, the pack's state beyond its stacked parameters,
    buffers, optimiser and batch streams (ELR's targets, the augmentation generators an ``inputs`` hook
    draws from, a weighting's state; ``{}`` when there is none). Given it, inside a run store, the pack
    checkpoints and a killed one resumes to the same numbers; every batch stream must then be a
    :class:`Batches`' ``next``, whose position the checkpoint keeps.
    ``best``: early stopping, the name of an ``on_epoch`` entry to minimise (a held-out loss). Each member
    then returns the state of its epoch with the lowest value, epoch 0 (before training) included and the
    earlier epoch on ties, and each history row gets that member's ``best_epoch`` so far;
    ``on_epoch(0, predict)`` is called once before the first epoch for it. The kept states and values are
    in the checkpoint. bf16 autocast on CUDA. Returns each member's trained parameters and buffers (a
    state dict) and its per-epoch history.
    """
    n = len(models)
    if not 0 < n <= width:
        raise ValueError(f"{n} members for a pack of width {width}")
    if len(batches) != n:
        raise ValueError(f"{n} models but {len(batches)} batch streams")
    if divergence not in ("raise", "record"):
        raise ValueError(f"divergence={divergence!r}: allowed raise | record")
    if y is None and loss is None:
        raise ValueError("labels y are needed for the default cross-entropy loss")
    if best is not None and on_epoch is None:
        raise ValueError(f"best={best!r} needs the on_epoch that reports it")
    for m in models:
        check_packable(m)
    slots = list(models) + [models[0]] * (width - n)  # padding: copies of the first, results dropped
    device = x.device
    if y is not None and y.dim() == 2:
        if len(y) != n:
            raise ValueError(f"{n} members but {len(y)} rows of labels")
        y = torch.cat([y, y[:1].expand(width - n, -1)])  # padded slots: the first member's labels
        slot = torch.arange(width, device=device)[:, None]
    own_rates = not isinstance(lr, int | float)
    lrs = [float(v) for v in lr] if own_rates else [float(lr)] * n  # type: ignore[union-attr]
    if len(lrs) != n:
        raise ValueError(f"{n} members but {len(lrs)} learning rates")
    lrs += [lrs[0]] * (width - n)
    # per-member rates: the optimiser steps at rate 1 and each slot's step is rescaled by its own rate, so
    # a member's arithmetic depends on its rate alone, never on its pack-mates' rates
    scale = torch.tensor(lrs, device=device) if own_rates else None
    base_lr = 1.0 if own_rates else lrs[0]
    params, buffers = stack_module_state([m.to(device) for m in slots])  # new leaves: (width, ...)
    base = copy.deepcopy(models[0]).to("meta").train()  # evaluation below switches it to eval mode
    plist = list(params.values())
    groups = [{"params": plist}, *extra_params]
    # the suite's one optimiser builder: fused on CUDA (one kernel for the whole pack's update), torch's
    # default on the CPU
    opt = build_optimizer(groups, optimizer, base_lr, device, weight_decay=weight_decay, momentum=momentum)
    base_lrs = [g["lr"] for g in opt.param_groups]
    step = opt.step if scale is None else _OwnRates(opt, plist, scale)  # per-member rates: rescaled steps

    def logits(p, b, xb):
        return functional_call(base, (p, b), (xb,))

    all_logits = vmap(logits)
    mixed = train.autocast(device)
    total = epochs * steps_per_epoch
    histories: list[list[dict[str, float]]] = [[] for _ in range(n)]
    alive = [True] * n
    start = 0
    keep = None if best is None else _Best(params, buffers)
    ckpt = resume.checkpointer()  # numbered per fit call of the run, so call it whether used or not
    if ckpt is not None and resume_state is not None:
        # the pack's own state, checkpointed as a resume_state is: its stacked tensors (the model's and
        # extra_params'), buffers, optimiser and each member's batch stream
        own = _own_state(opt, buffers, batches, desc) | ({} if keep is None else {"best": keep})
        resume.check_state(resume_state)
        saved = ckpt.load()
        if saved is not None:
            resume.restore(own, saved["own"])
            resume.restore(resume_state, saved["state"])
            resume.set_rng_state(saved)
            start, histories, alive = saved["epoch"], saved["histories"], saved["alive"]
    else:
        ckpt = None
    if keep is not None and start == 0:
        base.eval()
        keep.update(0, [r[best] for r in on_epoch(0, lambda xe: predict(logits, params, buffers, xe))])
        base.train()
    t = start * steps_per_epoch
    for epoch in progress(range(start, epochs), desc=desc, unit="ep", initial=start, total=epochs):
        sums = torch.zeros(width, device=device)
        for _ in range(steps_per_epoch):
            if lr_schedule is not None:
                factor = lr_schedule(t / total)
                for g, b in zip(opt.param_groups, base_lrs):
                    g["lr"] = b * factor
            idx = _draw(batches, width)
            yb = None if y is None else y[slot, idx] if y.dim() == 2 else y[idx]
            xb = x[idx] if inputs is None else inputs(idx)
            with mixed:
                out = all_logits(params, buffers, xb)
                # by default one cross-entropy over the flattened pack: 15 fewer device operations a step
                # than a vmapped F.cross_entropy, the same numbers bit for bit on the CPU (tested)
                losses = cross_entropy(out, yb) if loss is None else loss(out, yb, idx, params)
            opt.zero_grad(set_to_none=True)
            losses.sum().backward()
            step()
            sums += losses.detach().float()
            t += 1
        mean = (sums / steps_per_epoch).tolist()  # the one host sync of the epoch
        bad = [i for i in range(n) if alive[i] and not math.isfinite(mean[i])]
        if bad and divergence == "raise":
            raise DivergenceError(f"{desc}: training loss {mean[:n]} in epoch {epoch + 1}/{epochs}")
        rows = [
            {"epoch": epoch + 1, "train_loss": mean[i], "lr": opt.param_groups[0]["lr"] * lrs[i] / base_lr}
            for i in range(n)
        ]
        base.eval()  # batch norm by its running statistics, as train.fit evaluates
        for name, (xe, ye) in (evaluate or {}).items():
            acc = accuracies(logits, params, buffers, xe, ye)
            for i in range(n):
                rows[i][f"{name}_acc"] = acc[i]
        if on_epoch is not None:
            extra = on_epoch(epoch + 1, lambda xe: predict(logits, params, buffers, xe))
            for row, more in zip(rows, extra):
                row.update(more)
        if keep is not None:
            keep.update(epoch + 1, [row[best] for row in rows])
            for row, e in zip(rows, keep.epoch.tolist()):
                row["best_epoch"] = e
        base.train()
        for i, (h, row) in enumerate(zip(histories, rows)):
            if alive[i]:
                h.append(row)
        for i in bad:
            alive[i] = False
        if not any(alive):
            break
        if ckpt is not None and ckpt.due(final=epoch + 1 == epochs):
            ckpt.save(
                {
                    "epoch": epoch + 1,
                    "epochs": epochs,
                    "histories": histories,
                    "alive": alive,
                    **resume.rng_state(),
                    "own": resume.capture(own),
                    "state": resume.capture(resume_state),
                }
            )
    if keep is not None:
        params, buffers = keep.params, keep.buffers
    states = [
        {
            **{k: v[i].detach().clone() for k, v in params.items()},
            **{k: v[i].clone() for k, v in buffers.items()},
        }
        for i in range(n)
    ]
    return states, histories


class _Best:
    """Early stopping's memory for a pack (``fit``'s ``best``): per slot, the lowest value seen, its epoch,
    and the stacked parameters and buffers of that epoch. A checkpoint keeps it (``state_dict``)."""

    def __init__(self, params: dict[str, torch.Tensor], buffers: dict[str, torch.Tensor]):
        self.live = (params, buffers)
        self.params = {k: v.detach().clone() for k, v in params.items()}
        self.buffers = {k: v.clone() for k, v in buffers.items()}
        width = len(next(iter(params.values())))
        self.value = torch.full((width,), math.inf, dtype=torch.float64)
        self.epoch = torch.zeros(width, dtype=torch.int64)

    def update(self, epoch: int, values: list[float]) -> None:
        """Keep each member whose entry of ``values`` beats its best so far (ties keep the earlier epoch)."""
        with torch.no_grad():
            for i, v in enumerate(values):
                if v < self.value[i]:
                    self.value[i], self.epoch[i] = v, epoch
                    for kept, live in zip((self.params, self.buffers), self.live):
                        for k, t in live.items():
                            kept[k][i].copy_(t[i])

    def state_dict(self) -> dict:
        return {"value": self.value, "epoch": self.epoch, "params": self.params, "buffers": self.buffers}

    def load_state_dict(self, saved: dict) -> None:
        self.value.copy_(saved["value"])
        self.epoch.copy_(saved["epoch"])
        for kept, key in ((self.params, "params"), (self.buffers, "buffers")):
            for k, v in saved[key].items():
                kept[k].copy_(v)


def _own_state(opt: torch.optim.Optimizer, buffers: dict, batches: Sequence[Callable], desc: str) -> dict:
    """What a pack's checkpoint keeps of the pack itself, named as a ``resume_state``."""
    streams = [getattr(b, "__self__", None) for b in batches]
    if not all(isinstance(b, Batches) for b in streams):
        raise ValueError(f"{desc}: a pack that checkpoints needs each batch stream as a packed.Batches' next")
    tensors = [p for g in opt.param_groups for p in g["params"]]  # the pack's and extra_params' tensors
    return {
        **{f"tensor{i}": v for i, v in enumerate(tensors)},
        **{f"buffer.{k}": v for k, v in buffers.items()},
        "opt": opt,
        **{f"stream{i}": b for i, b in enumerate(streams)},
    }


class _OwnRates:
    """``opt.step()`` at rate 1 (times any schedule), then each slot's change of the stacked ``plist`` times
    its ``scale`` (its own learning rate): Adam's and SGD's steps are proportional to the rate, and their
    state (moments, momentum) does not depend on it. Multi-tensor (``_foreach_``) operations: three for
    the whole pack a step, not three per tensor (what a launch-bound GPU pays for), the same arithmetic."""

    def __init__(self, opt: torch.optim.Optimizer, plist: list[torch.Tensor], scale: torch.Tensor):
        self.opt, self.plist = opt, plist
        self.before = [torch.empty_like(p) for p in plist]
        self.weights = [scale.view(-1, *[1] * (p.dim() - 1)).expand_as(p) for p in plist]

    @torch.no_grad()
    def __call__(self) -> None:
        torch._foreach_copy_(self.before, self.plist)
        self.opt.step()
        torch._foreach_lerp_(self.before, self.plist, self.weights)
        torch._foreach_copy_(self.plist, self.before)


def _draw(batches: Sequence[Callable[[], torch.Tensor]], width: int) -> torch.Tensor:
    """One batch of indices per slot, (width, B): each member draws from its own stream once; padded
    slots repeat the first member's batch (their values never reach a real member)."""
    real = [b() for b in batches]
    return torch.stack(real + [real[0]] * (width - len(real)))


@torch.no_grad()
def predict(logits_fn, params, buffers, x: torch.Tensor, chunk: int = 4096):
    """Every slot's outputs on ``x`` in float32, (width, N, ...): vmapped forwards, chunk by chunk. A model
    that returns several tensors (a tuple or list: task heads, logits and features) gets a tuple back."""
    mixed = train.autocast(x.device)
    outs = []
    for i in range(0, len(x), chunk):
        with mixed:
            out = vmap(logits_fn, in_dims=(0, 0, None))(params, buffers, x[i : i + chunk])
        outs.append(out.float() if isinstance(out, torch.Tensor) else tuple(o.float() for o in out))
    if isinstance(outs[0], torch.Tensor):
        return torch.cat(outs, dim=1)
    return tuple(torch.cat(parts, dim=1) for parts in zip(*outs))


@torch.no_grad()
def accuracies(
    logits_fn, params, buffers, x: torch.Tensor, y: torch.Tensor, chunk: int = 4096
) -> list[float]:
    """Each slot's accuracy on (x, y)."""
    hits = predict(logits_fn, params, buffers, x, chunk).argmax(-1) == y
    return (hits.sum(-1).float() / len(y)).tolist()
