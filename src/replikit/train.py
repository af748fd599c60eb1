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
- inside a run store (:mod:`replikit.resume`), a ``fit`` given ``resume_state`` checkpoints and resumes
  where a killed run stopped, with the same numbers as an uninterrupted run;
- a tqdm bar over epochs, silent in CI, under ``REPLIKIT_PROGRESS=0`` and when stderr is no terminal
  (set ``REPLIKIT_PROGRESS=1`` to force it).
"""

from __future__ import annotations

import inspect
import math
import multiprocessing
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from replikit import processes, resume

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


# ---------------------------------------------------------------------------------------------------
# Placement. Data and models reach a run only through these two helpers, which take the run's device:
# a tensor made without naming a device stays on the CPU and breaks the first CUDA run (issue 9;
# tests/placement.py catches the slip on CPU). On CUDA both put 4-D images in channels_last, the
# layout cuDNN's convolutions run fastest in under bf16 autocast.
# ---------------------------------------------------------------------------------------------------


def to_device(a: Any, device: torch.device, dtype: torch.dtype | None = None) -> torch.Tensor:
    """An array (or tensor) as a tensor resident on ``device``; float images (N, C, H, W) channels_last on
    CUDA."""
    t = torch.as_tensor(a, dtype=dtype, device=device)
    if t.device.type == "cuda" and t.dim() == 4 and t.is_floating_point():
        t = t.contiguous(memory_format=torch.channels_last)  # batches sliced from it stay channels_last
    return t


def prepare_model(model: torch.nn.Module, device: torch.device, *, compile: bool = False) -> torch.nn.Module:
    """``model`` moved to ``device``; on CUDA, channels_last if it has 2-D convolutions; compiled if asked.

    compile: ``torch.compile`` in place (``Module.compile``: state-dict keys and attributes unchanged);
    each new input shape or train/eval switch costs one compilation (tens of seconds), so it pays off
    only for long runs at fixed shapes (the full profile's ``compile: true``).
    """
    model = model.to(device)
    if device.type == "cuda" and any(isinstance(m, torch.nn.Conv2d) for m in model.modules()):
        model = model.to(memory_format=torch.channels_last)
    if compile:
        model.compile()
    return model


def autocast(device: torch.device) -> torch.autocast:
    """The suite's mixed precision: bf16 autocast on CUDA, off elsewhere (the CPU's numbers stay float32).
    One place, so that a test can turn it on for the CPU and run the CUDA path's dtypes there."""
    return torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")


def build_optimizer(
    params,
    optimizer: str,
    lr: float,
    device: torch.device,
    *,
    weight_decay: float = 0.0,
    momentum: float = 0.9,
    foreach: bool | None = None,
) -> torch.optim.Optimizer:
    """Adam or SGD by name, over parameters or parameter groups. On CUDA the fused kernels (one kernel for
    the whole update); on the CPU torch's default per-tensor loop, or with ``foreach`` one update over all
    tensors (faster for many small ones, e.g. a multi-task net's heads). The same update rule either way."""
    how = {"fused": True} if device.type == "cuda" else {"foreach": foreach}
    if optimizer == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, **how)
    if optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay, **how)
    raise ValueError(f"optimizer={optimizer!r}: allowed adam | sgd")


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
    resume_state: dict[str, torch.Tensor] | None = None,
    max_grad_norm: float | None = None,
) -> list[dict[str, float]]:
    """Train for ``epochs`` passes over ``n`` examples; return the per-epoch history.

    step: loss of the batch ``idx`` (int64 indices on ``device``) at progress p = step / total_steps;
        may also return a dict of scalar tensors to average into the history.
    params: the parameters to optimise (an optimiser is built) or a ready optimiser.
    lr_schedule: multiplier of the base learning rate as a function of p (e.g. DANN's annealing).
    evaluate: called after each epoch in eval mode under no_grad (with the 1-based epoch if it takes an
        argument); its floats join the history row.
    models: modules switched between train() and eval() around ``evaluate``.
    resume_state: None, or the run's whole state beyond ``models``, the optimiser and the batch order
        (``{}`` when there is none): tensors (restored in place), generators (an augmentation's draws)
        and objects with ``state_dict()``/``load_state_dict()`` (a module outside ``models``, a
        weighting with its own optimiser, a :class:`replikit.packed.Batches` stream). Given it, and
        inside a run store, ``fit`` checkpoints and resumes (:mod:`replikit.resume`); every optimised
        parameter must then belong to ``models`` or ``resume_state`` (checked), and a method with state
        it cannot name leaves it None, so that its killed runs restart from scratch.
    max_grad_norm: clip the global gradient norm of the optimised parameters to this (None: no clipping;
        on the device, no host sync).
    """
    if isinstance(params, torch.optim.Optimizer):
        opt = params
    else:
        opt = build_optimizer(params, optimizer, lr, device, weight_decay=weight_decay, momentum=momentum)
    base_lrs = [g["lr"] for g in opt.param_groups]
    clipped = [p for g in opt.param_groups for p in g["params"]]
    steps_per_epoch = max(1, n // batch_size)  # drop the ragged last batch: fixed shapes, fixed p grid
    total = epochs * steps_per_epoch
    gen = torch.Generator(device=device).manual_seed(seed)
    mixed = autocast(device)
    history: list[dict[str, float]] = []
    start = 0
    ckpt = resume.checkpointer()  # numbered per fit call of the run, so call it whether used or not
    if ckpt is not None and resume_state is not None and models:
        _check_resumable(opt, models, resume_state, desc)
        saved = ckpt.load()
        if saved is not None:
            start, history = _restore(saved, models, opt, gen, resume_state)
    else:
        ckpt = None
    eval_takes_epoch = evaluate is not None and len(inspect.signature(evaluate).parameters) > 0
    bar = progress(range(start, epochs), desc=desc, unit="ep", initial=start, total=epochs)
    t = start * steps_per_epoch
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
            with mixed:
                out = step(idx, p)
            loss, logs = out if isinstance(out, tuple) else (out, {})
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if max_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(clipped, max_grad_norm, foreach=True)
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
            with torch.no_grad(), mixed:
                row.update(evaluate(epoch + 1) if eval_takes_epoch else evaluate())
        history.append(row)
        bar.set_postfix(loss=f"{mean_loss:.3f}")
        if ckpt is not None and ckpt.due(final=epoch + 1 == epochs):
            ckpt.save(_snapshot(epoch + 1, epochs, history, models, opt, gen, resume_state))
    for m in models:
        m.eval()
    return history


def _check_resumable(opt: torch.optim.Optimizer, models, state: dict[str, Any], desc: str) -> None:
    """A checkpoint restores ``models`` and ``state``: refuse to checkpoint a run whose optimiser also
    moves a tensor held by neither (it would restart from its initial value on resume)."""
    resume.check_state(state)
    held = {id(p) for m in models for p in m.parameters()} | resume.held_parameters(state)
    lost = sum(1 for g in opt.param_groups for p in g["params"] if id(p) not in held)
    if lost:
        raise ValueError(
            f"{desc}: {lost} optimised tensor(s) belong neither to `models` nor to `resume_state`; "
            "a resumed run would restart them from scratch (add their module to either)"
        )


def _snapshot(epoch, epochs, history, models, opt, gen, state) -> dict[str, Any]:
    return {
        "epoch": epoch,
        "epochs": epochs,
        "history": list(history),
        "models": [m.state_dict() for m in models],
        "opt": opt.state_dict(),
        "gen": gen.get_state(),
        **resume.rng_state(),
        "state": resume.capture(state),
    }


def _restore(saved, models, opt, gen, state) -> tuple[int, list[dict[str, float]]]:
    for m, sd in zip(models, saved["models"], strict=True):
        m.load_state_dict(sd)
    opt.load_state_dict(saved["opt"])
    gen.set_state(saved["gen"])
    resume.set_rng_state(saved)
    resume.restore(state, saved["state"])
    return saved["epoch"], list(saved["history"])


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
# Runs in parallel. Small models on a CPU spend most of their time in per-op overhead that does not
# parallelise across threads; separate processes with one thread each do (benchmarks/parallel_seeds.py
# measures it). On CUDA the same worker processes share the one GPU, so many small runs fill it.
# ---------------------------------------------------------------------------------------------------


RAY_ENV = "REPLIKIT_RAY_ADDRESS"  # "local" (a Ray instance on this machine), "auto", or "ray://head:10001"
RAY_GPUS_ENV = "REPLIKIT_RAY_GPUS_PER_RUN"  # fraction of a GPU per run on CUDA nodes (default 0.25)


def _init_worker() -> None:
    torch.set_num_threads(1)
    os.environ.setdefault("REPLIKIT_PROGRESS", "0")
    # deterministic cuBLAS, so a run's numbers do not depend on how many runs share the GPU
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


def _init_pool_worker(parent: int) -> None:
    _init_worker()
    processes.exit_with(parent)  # a killed parent (SIGKILL stops no pool) must not leave its workers training


def _ray_call(fn, task, folder, key):
    """One run on a Ray worker: one torch thread, as in the local pool; the driver records the result."""
    _init_worker()
    return resume.call(fn, task, folder, key, keep=False)


def _run_ray(
    fn, tasks: list[dict[str, Any]], keys: list[str | None], folder: str | None, device: str
) -> list[Any]:
    """The tasks on a Ray cluster (``REPLIKIT_RAY_ADDRESS``), fractional GPUs on CUDA (optional extra)."""
    try:
        import ray
    except ImportError:
        raise RuntimeError(f"{RAY_ENV} is set but Ray is not installed: pip install -e '.[ray]'") from None
    address = os.environ[RAY_ENV]
    if not ray.is_initialized():
        ray.init(
            address=None if address == "local" else address,
            include_dashboard=False,
            log_to_driver=False,
            configure_logging=False,
        )
    gpus = float(os.environ.get(RAY_GPUS_ENV, "0.25")) if resolve_device(device).type == "cuda" else 0.0
    remote = ray.remote(num_cpus=1, num_gpus=gpus, max_retries=2)(_ray_call)
    refs = [remote.remote(fn, task, folder, key) for task, key in zip(tasks, keys)]
    out = []
    for ref, key in zip(progress(refs, desc="ray runs", unit="run"), keys):
        result = ray.get(ref)
        if folder is not None:
            resume.record(Path(folder), key, result)
        out.append(result)
    return out


def run_many(
    fn: Callable[..., Any],
    tasks: Sequence[dict[str, Any]],
    workers: int = 0,
    device: str = "auto",
    desc: str = "runs",
) -> list[Any]:
    """``[fn(**task) for task in tasks]``, in ``workers`` processes (0 = one per CPU core).

    ``fn`` must be importable (a module-level function) so that spawned workers can find it. Results
    come back in task order and are identical for any number of workers (every run uses one torch
    thread, on the CPU and on CUDA alike). Inside a run store (:mod:`replikit.resume`) finished runs
    are read back instead of run again, and each new one is recorded as soon as it ends. With
    ``REPLIKIT_RAY_ADDRESS`` set, the runs go to a Ray cluster instead (``pip install -e '.[ray]'``),
    one CPU and ``REPLIKIT_RAY_GPUS_PER_RUN`` of a GPU each, with the same results as the local pool.
    The local workers are kept for the next call (see :func:`shutdown_pool`).
    """
    resolve_device(device)  # fail early on cuda without CUDA
    store = resume.active()
    keys = [resume.task_key(fn, t) if store else None for t in tasks]
    results = [resume.load_record(store, k) if store else resume.MISSING for k in keys]
    todo = [i for i, r in enumerate(results) if r is resume.MISSING]
    folder = str(store) if store else None
    if os.environ.get(RAY_ENV) and todo:
        done = _run_ray(fn, [tasks[i] for i in todo], [keys[i] for i in todo], folder, device)
        for i, r in zip(todo, done):
            results[i] = r
        return results
    workers = min(workers or processes.cores(), max(1, len(todo)))
    if workers == 1:
        # one thread here too: the thread count changes float reduction order, hence the numbers, and
        # `workers` must only change the speed, never the results
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            for i in progress(todo, desc=desc, unit="run"):
                results[i] = resume.call(fn, tasks[i], folder, keys[i])
        finally:
            torch.set_num_threads(threads)
        return results
    pool = _pool(workers)
    futures = {i: pool.submit(resume.call, fn, tasks[i], folder, keys[i]) for i in todo}
    try:
        for i in progress(todo, desc=desc, unit="run"):
            results[i] = futures[i].result()
    except BaseException as err:
        for f in futures.values():
            f.cancel()
        if not isinstance(err, Exception) or isinstance(err, BrokenProcessPool):
            shutdown_pool(kill=True)  # Ctrl-C or a dead worker: nothing of this pool is kept
        raise
    return results


# One pool of spawned workers per process, kept between calls: a method's sequential looks, its
# scoring and training passes reuse warm workers instead of paying a spawn (a fresh interpreter that
# imports torch and the method, about 2 s of both cores) each time. A worker runs tasks one after
# another either way, so reuse changes no number. The pool is rebuilt when it is too small, broken,
# or when the environment, working folder or import path it was spawned with has changed (spawned
# workers see those as they were at spawn).
_POOL: ProcessPoolExecutor | None = None
_POOL_KEY: tuple | None = None
_POOL_SIZE = 0


def _pool(workers: int) -> ProcessPoolExecutor:
    global _POOL, _POOL_KEY, _POOL_SIZE
    key = (tuple(sorted(os.environ.items())), os.getcwd(), tuple(sys.path))
    if _POOL is not None and (key != _POOL_KEY or _POOL_SIZE < workers or _POOL._broken):
        shutdown_pool()
    if _POOL is None:
        ctx = multiprocessing.get_context("spawn")  # fork after torch has started threads can deadlock
        _POOL = ProcessPoolExecutor(
            workers, mp_context=ctx, initializer=_init_pool_worker, initargs=(os.getpid(),)
        )
        _POOL_KEY, _POOL_SIZE = key, workers
    return _POOL


def shutdown_pool(kill: bool = False) -> None:
    """Stop the kept worker pool (at exit this happens by itself); ``kill`` does not wait for runs."""
    global _POOL, _POOL_KEY, _POOL_SIZE
    pool, _POOL, _POOL_KEY, _POOL_SIZE = _POOL, None, None, 0
    if pool is None:
        return
    if kill:
        for proc in list((pool._processes or {}).values()):
            proc.kill()
    pool.shutdown(wait=not kill, cancel_futures=True)
