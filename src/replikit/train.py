"""One training loop for every method, and the runner that spreads seeds over processes.

The loop knows nothing about any paper: a method hands it a ``step(idx, progress)`` function that
computes the loss of one batch of example indices (the paper logic lives in the method module), and
the loop does the rest:

- data stays resident on the device: a batch is a slice of a permutation drawn on the device, so there
  is no DataLoader, no host-device copy and no Python-side collation per step;
- device auto (CUDA when present), bfloat16 autocast on CUDA (no grad scaler needed);
- per-step learning-rate schedules as a function of training progress p in [0, 1];
- loss summed on the device and checked once per epoch: a non-finite loss raises
  :class:`DivergenceError` naming the epoch (one host sync per epoch, not per step);
- a per-epoch history (train loss, lr, whatever ``evaluate`` returns) for the figures;
- a tqdm bar over epochs, silent in CI, under ``REPLIKIT_PROGRESS=0`` and when stderr is no terminal
  (set ``REPLIKIT_PROGRESS=1`` to force it).
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
import multiprocessing
from typing import Any

import torch
from tqdm import tqdm

StepFn = Callable[[torch.Tensor, float], "torch.Tensor | tuple[torch.Tensor, dict[str, torch.Tensor]]"]


class DivergenceError(RuntimeError):
    """The training loss became NaN or infinite."""


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device={device!r} but CUDA is not available here (use device: auto)")
    return torch.device(device)


def progress_enabled() -> bool:
    flag = os.environ.get("REPLIKIT_PROGRESS")
    if flag is not None:
        return flag not in ("0", "false", "")
    if os.environ.get("CI"):
        return False
    return sys.stderr.isatty() or "ipykernel" in sys.modules


def progress(iterable: Iterable, **kwargs) -> Iterable:
    """tqdm with the suite's on/off rule (see module docstring)."""
    return tqdm(iterable, disable=not progress_enabled(), dynamic_ncols=True, leave=False, **kwargs)


def manual_seed(seed: int) -> None:
    """Seed torch's global generators (weights are initialised from these)."""
    torch.manual_seed(seed)


def fit(
    step: StepFn,
    params: Iterable[torch.nn.Parameter] | torch.optim.Optimizer,
    n: int,
    *,
    epochs: int,
    batch_size: int,
    seed: int,
    device: torch.device,
    lr: float = 1e-3,
    optimizer: str = "adam",
    weight_decay: float = 0.0,
    momentum: float = 0.9,
    lr_schedule: Callable[[float], float] | None = None,
    evaluate: Callable[[], dict[str, float]] | None = None,
    models: Sequence[torch.nn.Module] = (),
    desc: str = "train",
) -> list[dict[str, float]]:
    """Train for ``epochs`` passes over ``n`` examples; return the per-epoch history.

    step: loss of the batch ``idx`` (int64 indices on ``device``) at progress p = step / total_steps;
        may also return a dict of scalar tensors to average into the history.
    params: the parameters to optimise (an optimiser is built) or a ready optimiser.
    lr_schedule: multiplier of the base learning rate as a function of p (e.g. DANN's annealing).
    evaluate: called after each epoch in eval mode under no_grad; its floats join the history row.
    models: modules switched between train() and eval() around ``evaluate``.
    """
    if isinstance(params, torch.optim.Optimizer):
        opt = params
    elif optimizer == "adam":
        opt = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    elif optimizer == "sgd":
        opt = torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    else:
        raise ValueError(f"optimizer={optimizer!r}: allowed adam | sgd")
    base_lrs = [g["lr"] for g in opt.param_groups]
    steps_per_epoch = max(1, n // batch_size)  # drop the ragged last batch: fixed shapes, fixed p grid
    total = epochs * steps_per_epoch
    gen = torch.Generator(device=device).manual_seed(seed)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")
    history: list[dict[str, float]] = []
    bar = progress(range(epochs), desc=desc, unit="ep")
    t = 0
    for epoch in bar:
        for m in models:
            m.train()
        perm = torch.randperm(n, device=device, generator=gen)
        loss_sum = torch.zeros((), device=device)
        log_sums: dict[str, torch.Tensor] = {}
        for b in range(steps_per_epoch):
            p = t / total
            if lr_schedule is not None:
                factor = lr_schedule(p)
                for g, base in zip(opt.param_groups, base_lrs):
                    g["lr"] = base * factor
            idx = perm[b * batch_size : (b + 1) * batch_size]
            with autocast:
                out = step(idx, p)
            loss, logs = out if isinstance(out, tuple) else (out, {})
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_sum += loss.detach().float()
            for k, v in logs.items():
                log_sums[k] = log_sums.get(k, 0.0) + v.detach().float()
            t += 1
        mean_loss = loss_sum.item() / steps_per_epoch  # the one host sync of the epoch
        if not math.isfinite(mean_loss):
            raise DivergenceError(
                f"{desc}: training loss is {mean_loss} in epoch {epoch + 1}/{epochs} "
                f"(lr={opt.param_groups[0]['lr']:.3g}); lower the learning rate or check the inputs"
            )
        row = {"epoch": epoch + 1, "train_loss": mean_loss, "lr": opt.param_groups[0]["lr"]}
        row.update({k: v.item() / steps_per_epoch for k, v in log_sums.items()})
        if evaluate is not None:
            for m in models:
                m.eval()
            with torch.no_grad(), autocast:
                row.update(evaluate())
        history.append(row)
        bar.set_postfix(loss=f"{mean_loss:.3f}")
    for m in models:
        m.eval()
    return history


@torch.no_grad()
def predict(model: torch.nn.Module, x: torch.Tensor, batch_size: int = 4096) -> torch.Tensor:
    """Logits of ``model`` on ``x`` in eval mode, in large batches."""
    was_training = model.training
    model.eval()
    out = torch.cat([model(x[i : i + batch_size]).float() for i in range(0, len(x), batch_size)])
    model.train(was_training)
    return out


@torch.no_grad()
def accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    return (predict(model, x).argmax(1) == y).float().mean().item()


# ---------------------------------------------------------------------------------------------------
# Seeds in parallel. Small models on a CPU spend most of their time in per-op overhead that does not
# parallelise across threads; separate processes with one thread each do (benchmarks/parallel_seeds.py
# measures it). On CUDA every run stays in this process, on the one device.
# ---------------------------------------------------------------------------------------------------


def _init_worker() -> None:
    torch.set_num_threads(1)
    os.environ.setdefault("REPLIKIT_PROGRESS", "0")


def run_many(
    fn: Callable[..., Any], tasks: Sequence[dict[str, Any]], workers: int = 0, device: str = "auto", desc: str = "runs"
) -> list[Any]:
    """``[fn(**task) for task in tasks]``, in ``workers`` processes (0 = one per CPU core).

    ``fn`` must be importable (a module-level function) so that spawned workers can find it. Results
    come back in task order and, on the CPU, are identical for any number of workers (every run uses one
    torch thread). On CUDA, or with one worker, the tasks run here, one after another.
    """
    n_cpu = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    workers = workers or n_cpu
    if resolve_device(device).type == "cuda":
        return [fn(**task) for task in progress(tasks, desc=desc, unit="run")]
    if workers == 1 or len(tasks) == 1:
        # one thread here too: the thread count changes float reduction order, hence the numbers, and
        # `workers` must only change the speed, never the results
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return [fn(**task) for task in progress(tasks, desc=desc, unit="run")]
        finally:
            torch.set_num_threads(threads)
    ctx = multiprocessing.get_context("spawn")  # fork after torch has started threads can deadlock
    with ProcessPoolExecutor(min(workers, len(tasks)), mp_context=ctx, initializer=_init_worker) as pool:
        futures = [pool.submit(fn, **task) for task in tasks]
        return [f.result() for f in progress(futures, desc=desc, unit="run")]
