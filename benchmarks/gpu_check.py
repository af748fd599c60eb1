"""``make gpu-check``: is every method ready for the GPU, and what will the full profile cost?

    python benchmarks/gpu_check.py                        # on the GPU machine: about 6 minutes
    timeout 420 python benchmarks/gpu_check.py --parts full --budget 330 --method-timeout 45   # bounded
    python benchmarks/gpu_check.py --device cpu --quick --methods elr,dann --parts full   # a CPU test

Part (a), ``notebooks``: every notebook on the device, smoke profile, through ``replikit.runner.execute``
(needs papermill, jupytext and a python3 Jupyter kernel; skipped with a message when they are missing).
Part (b), ``full``: every method's *full* profile on stand-ins of the real data sets (``REPLIKIT_FAKE_DATA``:
real shapes and sizes, seeded noise; see ``replikit.data.fake``), one seed, and every call of
``train.fit`` cut to one epoch of at most ``--steps`` steps. Each ``fit`` call records its full length
(epochs x steps, from the full profile's config), the time of its steps and of its per-epoch evaluation;
the projection scales them to the full length and by ``n_seeds``, plus the rest of the run (data, probes,
merging evaluations) times ``n_seeds``. First steps include cuDNN autotuning and allocator warm-up, so
projections lean high. Part (b) needs only torch, numpy, pandas, scipy, scikit-learn, pydantic, PyYAML,
tqdm and ``replikit`` (imported from ``src/``); ResNets also need torchvision.

No row stops the check: each method is attempted and gets ``ok``, the exception's type and message, or
``timeout after N s``: each part-(b) row is cut off after ``--method-timeout`` seconds (SIGALRM: in the
main thread, at the next Python bytecode, so one long kernel or C call still finishes first) and the next
method runs. Rows are ``skipped`` once ``--budget`` seconds are spent; a row started just before that can
still take ``--method-timeout`` seconds, so the check ends within start-up + budget + method timeout.
The table is printed and written to ``--out`` (``.md`` and ``.json``), with the device name and the torch
and CUDA versions.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib.util
import inspect
import json
import os
import signal
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))  # the GPU machine may run this without installing replikit
os.environ.setdefault("REPLIKIT_PROGRESS", "0")

import torch  # noqa: E402  (after the sys.path insert above)

from replikit import train  # noqa: E402
from replikit.data import fake  # noqa: E402
from replikit.methods import available, get_method, load_config  # noqa: E402

# Part (b)'s own cuts on top of one seed and capped fit calls: parts of a run outside train.fit that
# would take minutes at full size (their time is then under-projected: see `note`; REST_SCALE below
# projects data_diet's back).
# Methods with loops of their own (no train.fit) run ``steps`` cut by SCALE and are projected back.
BOUNDED = {
    "rotnet": ({"probe_iters": 10}, "probes: 10 L-BFGS iterations of the full profile's 300"),
    "grokking": ({"steps": 2000, "checkpoints": 60}, "own loop: 2,000 of 100,000 steps, projected linearly"),
    "critical_periods": (
        {"steps": 1500, "short_deficit": 50, "long_deficit": 200, "late_start": 500, "record_every": 25},
        "own loop: 1,500 of 15,000 steps, projected linearly",
    ),
    "data_diet": (
        {"score_inits": 1},
        "score runs: 1 of the full profile's 10 inits",
    ),
}
SCALE = {"grokking": "steps", "critical_periods": "steps"}  # full / checked value of this key scales the time
# Parts cut by a count in BOUNDED that run outside train.fit's own scaling: full / checked value of the key
# scales the time spent inside every call of the method module's function (its fit calls included), the
# rest of the run is projected as usual. data_diet: each score run (per-example GraNd passes at init and
# after score_epoch, and its short fit) is one call of score_one, repeated score_inits times per seed.
REST_SCALE = {"data_diet": ("score_inits", "score_one")}
# --quick (CPU tests): small stand-ins and sizes that fit them
QUICK_FAKE = (512, 64)
QUICK = {
    "dann": {"width": 4, "domain_hidden": 8, "batch_size": 16, "val_size": 16, "moons": False},
    "elr": {"batch_size": 16, "train_subset": 64, "sweep_seeds": 0},
    "sla": {"batch_size": 8, "few_batch_size": 8, "arms": ["baseline", "sla"], "label_fraction": 0.05},
    "rotnet": {"width": 4, "batch_size": 16, "ft_steps": 2, "probe_iters": 5, "shots": [10, 0]},
    "gradnorm": {
        "task_counts": [2],
        "optimizers": ["sgd"],
        "grid_optimizers": ["sgd"],
        "grid_gammas": [1.0],
        "batch_size": 16,
        "n_train": 64,
        "n_val": 32,
        "n_test": 32,
        "lrs_sgd": [0.001],
    },
    "uncertainty_weighting": {
        "batch_size": 16,
        "train_subset": 64,
        "grid_mass": [1.0],
        "grid_centroid": [1.0],
        "single_task": False,
    },
    "task_arithmetic": {
        "n_tasks": 2,
        "n_targets": 1,
        "pretrain_per_task": 16,
        "head_size": 8,
        "head_steps": 2,
        "finetune_size": 50,
        "val_size": 50,
        "test_size": 0,
        "batch_size": 16,
    },
    "ties_merging": {
        "task_counts": [2, 3],
        "k_sweep": [0.2],
        "ta_lambdas": [0.5],
        "ties_lambdas": [1.0],
        "pretrain_per_task": 16,
        "head_size": 8,
        "head_steps": 2,
        "finetune_size": 50,
        "val_size": 50,
        "test_size": 0,
        "batch_size": 16,
    },
    "model_soups": {
        "val_size": 50,
        "ft_size": 64,
        "pretrain_size": 128,
        "lp_steps": 2,
        "ft_lrs": [0.001],
        "ft_seeds": 2,
        "ft_augment": [True],
        "batch_size": 16,
    },
    "data_diet": {
        "score_inits": 1,
        "score_batch": 16,
        "batch_size": 16,
        "val_size": 100,
        "keep_fractions": [0.5],
    },
    "grokking": {"modulus": 11, "width": 8, "steps": 20, "checkpoints": 10},
    "critical_periods": {
        "n_samples": 200,
        "steps": 60,
        "short_deficit": 5,
        "long_deficit": 10,
        "late_start": 30,
        "record_every": 10,
    },
    "downstream_scaling": {
        "pretrain_tokens": [1024, 2048, 4096, 8192, 16384],
        "n_fit": 3,
        "finetune_tokens": 2048,
        "eval_tokens": 1000,
        "hidden": 16,
        "layers": 1,
        "batch_size": 16,
    },
}
OPTIONAL = (
    "torchvision",
    "papermill",
    "jupytext",
    "nbclient",
    "ipykernel",
    "mnist1d",
    "matplotlib",
    "seaborn",
)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def environment(device: torch.device) -> dict:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    missing = [m for m in OPTIONAL if importlib.util.find_spec(m) is None]
    return {
        "device": name,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "python": sys.version.split()[0],
        "missing_packages": missing,
    }


# ------------------------------------------------------------------ part (b): the fit recorder


class FitRecorder:
    """Replaces ``train.fit`` for the duration of a run: one epoch of at most ``steps`` steps per call,
    timed (steps and evaluation apart), with the call's full length recorded for the projection."""

    def __init__(self, device: torch.device, steps: int):
        self.device, self.steps, self.calls = device, steps, []
        self._fit = train.fit

    def __call__(self, step, params, n, *, epochs, batch_size, evaluate=None, **kwargs):
        per_epoch = max(1, n // batch_size)
        run_steps = min(per_epoch, self.steps)
        eval_s = [0.0]
        takes_epoch = evaluate is not None and len(inspect.signature(evaluate).parameters) > 0

        def timed_evaluate(epoch):  # fit passes the epoch on to an evaluate that takes it, as fit does
            sync(self.device)
            t0 = time.perf_counter()
            row = evaluate(epoch) if takes_epoch else evaluate()
            sync(self.device)
            eval_s[0] += time.perf_counter() - t0
            return row

        sync(self.device)
        t0 = time.perf_counter()
        history = self._fit(
            step,
            params,
            run_steps * batch_size if run_steps < per_epoch else n,
            epochs=1,
            batch_size=batch_size,
            evaluate=timed_evaluate if evaluate else None,
            **kwargs,
        )
        sync(self.device)
        step_s = time.perf_counter() - t0 - eval_s[0]
        self.calls.append(
            {
                "desc": kwargs.get("desc", "train"),
                "epochs": epochs,
                "steps_per_epoch": per_epoch,
                "run_steps": run_steps,
                "step_s": step_s,
                "eval_s": eval_s[0],
            }
        )
        return [dict(history[-1], epoch=e + 1) for e in range(epochs)]  # as long as the real history

    @contextlib.contextmanager
    def installed(self):
        train.fit = self
        try:
            yield self
        finally:
            train.fit = self._fit


class CallTimer:
    """Replaces a method module's function for the duration of a run (``REST_SCALE``): the seconds spent
    inside its calls, and which fit calls (of ``recorder``) they made, so the projection can scale both."""

    def __init__(self, module, name: str, recorder: FitRecorder, device: torch.device):
        self.module, self.name, self.recorder, self.device = module, name, recorder, device
        self.seconds, self.fit_calls = 0.0, []
        self._fn = getattr(module, name)

    def __call__(self, *args, **kwargs):
        first = len(self.recorder.calls)
        sync(self.device)
        t0 = time.perf_counter()
        try:
            return self._fn(*args, **kwargs)
        finally:
            sync(self.device)
            self.seconds += time.perf_counter() - t0
            self.fit_calls += range(first, len(self.recorder.calls))

    @contextlib.contextmanager
    def installed(self):
        setattr(self.module, self.name, self)
        try:
            yield self
        finally:
            setattr(self.module, self.name, self._fn)


def projection(
    calls: list[dict], total_s: float, n_seeds: int, scaled: CallTimer | None = None, factor: float = 1.0
) -> tuple[float, float]:
    """(projected seconds of the full profile, seconds per epoch of its longest training).

    scaled, factor: the time inside ``scaled``'s calls, their fit calls included, counts ``factor`` times.
    """
    full = [
        c["step_s"] / c["run_steps"] * c["steps_per_epoch"] * c["epochs"] + c["eval_s"] * c["epochs"]
        for c in calls
    ]
    fit_s = [c["step_s"] + c["eval_s"] for c in calls]
    inside = set(scaled.fit_calls) if scaled is not None else set()
    scaled_rest = max(0.0, scaled.seconds - sum(fit_s[i] for i in inside)) if scaled is not None else 0.0
    rest = max(0.0, total_s - sum(fit_s) - scaled_rest)
    if not calls:
        return (rest + scaled_rest * factor) * n_seeds, float("nan")
    big = max(range(len(calls)), key=lambda i: full[i])
    weighted = sum(f * (factor if i in inside else 1.0) for i, f in enumerate(full))
    return (weighted + rest + scaled_rest * factor) * n_seeds, full[big] / calls[big]["epochs"]


class MethodTimeout(BaseException):
    """A row ran past ``--method-timeout``. A BaseException, like KeyboardInterrupt, so that no
    ``except Exception`` inside a method (or a library it calls) can swallow it."""


@contextlib.contextmanager
def time_limit(seconds: float | None):
    """Raise :class:`MethodTimeout` in the main thread after ``seconds`` (SIGALRM); the timer is always
    disarmed and the previous handler restored on the way out. No limit for ``None`` or 0, nor where
    SIGALRM cannot be used (no ``signal.setitimer``, or not the main thread)."""
    if (
        not seconds
        or not hasattr(signal, "setitimer")
        or threading.current_thread() is not threading.main_thread()
    ):
        yield
        return

    def on_alarm(signum, frame):
        raise MethodTimeout(seconds)

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        try:
            signal.setitimer(signal.ITIMER_REAL, 0)  # disarm (the alarm may fire up to here: still caught)
        finally:
            signal.signal(signal.SIGALRM, previous)


def full_row(
    method: str, device: torch.device, steps: int, quick: bool, timeout: float | None = None
) -> dict:
    """Part (b)'s row of ``method``; ``timeout``: seconds before the row is cut off (None: no limit)."""
    row = {"part": "full", "method": method}
    overrides, note = BOUNDED.get(method, ({}, ""))
    overrides = {**overrides, **(QUICK.get(method, {}) if quick else {})}
    t0 = time.perf_counter()
    try:
        full_cfg = load_config(method, profile="full")
        cfg = load_config(
            method, profile="full", overrides={**overrides, "device": str(device), "workers": 1, "n_seeds": 1}
        )
        module = get_method(method)
        recorder = FitRecorder(device, steps)
        scaled, factor = None, 1.0
        with contextlib.ExitStack() as stack:  # its clean-ups run after the timer is disarmed
            stack.enter_context(fake.substitute(*(QUICK_FAKE if quick else (None, None))))
            stack.enter_context(recorder.installed())
            if method in REST_SCALE:
                key, fn_name = REST_SCALE[method]
                factor = getattr(full_cfg, key) / getattr(cfg, key)
                scaled = stack.enter_context(CallTimer(module, fn_name, recorder, device).installed())
                note = f"{note}; time inside {fn_name} (its fits included) projected x{factor:g}"
            with time_limit(timeout and max(1e-3, timeout - (time.perf_counter() - t0))):
                module.run(cfg)
                sync(device)
        seconds = time.perf_counter() - t0
        projected_s, epoch_s = projection(recorder.calls, seconds, full_cfg.n_seeds, scaled, factor)
        if method in SCALE:
            projected_s *= getattr(full_cfg, SCALE[method]) / getattr(cfg, SCALE[method])
        row.update(
            status="ok",
            seconds=round(seconds, 1),
            s_per_epoch=round(epoch_s, 3),
            fit_calls=len(recorder.calls),
            gpu_hours=round(projected_s / 3600, 2),
            note=note,
        )
        if scaled is not None:
            row["scaled_s"] = round(scaled.seconds, 1)  # time inside the REST_SCALE function, before x factor
    except MethodTimeout:
        row.update(
            status=f"timeout after {timeout:g} s",
            seconds=round(time.perf_counter() - t0, 1),
            note=note,
            trace=traceback.format_exc(limit=-4),  # where it was cut off
        )
    except Exception as err:  # noqa: BLE001  (every row is attempted: record and go on)
        row.update(
            status=f"error: {type(err).__name__}: {str(err).splitlines()[0][:300] if str(err) else ''}",
            seconds=round(time.perf_counter() - t0, 1),
            note=note,
            trace=traceback.format_exc(limit=-4),
        )
    finally:
        if device.type == "cuda":
            gc.collect()  # an interrupted run leaves cycles holding device memory
            torch.cuda.empty_cache()
    return row


# ------------------------------------------------------------------ part (a): notebooks


def notebook_rows(methods: list[str], device: torch.device, deadline: float) -> list[dict]:
    missing = [m for m in ("papermill", "jupytext") if importlib.util.find_spec(m) is None]
    if missing:
        reason = f"skipped: {' and '.join(missing)} not installed (pip install papermill jupytext ipykernel)"
        print(f"notebooks: {reason}", flush=True)
        return [{"part": "notebook", "method": m, "status": reason} for m in methods]
    from replikit import runner

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for m in methods:
            row = {"part": "notebook", "method": m}
            if time.perf_counter() > deadline:
                rows.append(dict(row, status="skipped: time budget spent"))
                continue
            t0 = time.perf_counter()
            try:
                runner.execute(
                    m, profile="smoke", overrides={"device": str(device)}, out_dir=Path(tmp) / m, root=ROOT
                )
                row["status"] = "ok"
            except Exception as err:  # noqa: BLE001  (the next notebook still runs)
                row["status"] = (
                    f"error: {type(err).__name__}: {str(err).splitlines()[0][:300] if str(err) else ''}"
                )
            row["seconds"] = round(time.perf_counter() - t0, 1)
            print(f"notebook {m}: {row['status']} ({row['seconds']} s)", flush=True)
            rows.append(row)
    return rows


# ------------------------------------------------------------------ the table


COLUMNS = ("part", "method", "status", "seconds", "s_per_epoch", "gpu_hours", "note")


def table(rows: list[dict]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in rows:
        lines.append("| " + " | ".join(str(r.get(c, "")).replace("|", "/") for c in COLUMNS) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu")
    parser.add_argument("--quick", action="store_true", help="small stand-ins and sizes (CPU tests)")
    parser.add_argument("--methods", default="", help="comma-separated (default: all)")
    parser.add_argument("--parts", default="notebooks,full", help="notebooks, full or both")
    parser.add_argument("--steps", type=int, default=0, help="steps per fit call (default 20; --quick: 2)")
    parser.add_argument("--budget", type=float, default=400.0, help="seconds; later rows are skipped")
    parser.add_argument(
        "--method-timeout",
        type=float,
        default=45.0,
        help="seconds per method's full-profile row before it is cut off (0: no limit; default 45)",
    )
    parser.add_argument(
        "--timeouts",
        default="",
        help="per-method exceptions to --method-timeout, e.g. data_diet=120,ties_merging=120",
    )
    parser.add_argument("--out", default="reports/gpu_check", help="writes OUT.md and OUT.json")
    args = parser.parse_args(argv)
    timeouts = {m: float(v) for m, v in (kv.split("=") for kv in args.timeouts.split(",") if kv)}

    device = train.resolve_device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    methods = [m for m in args.methods.split(",") if m] or available()
    steps = args.steps or (2 if args.quick else 20)
    deadline = time.perf_counter() + args.budget
    env = environment(device)
    print(
        f"device {env['device']} | torch {env['torch']} | CUDA {env['cuda']} | python {env['python']}",
        flush=True,
    )
    if env["missing_packages"]:
        print(f"not installed here: {', '.join(env['missing_packages'])}", flush=True)

    rows: list[dict] = []
    if "notebooks" in args.parts:
        rows += notebook_rows(methods, device, deadline)
    if "full" in args.parts:
        for m in methods:
            if time.perf_counter() > deadline:
                rows.append({"part": "full", "method": m, "status": "skipped: time budget spent"})
                continue
            rows.append(full_row(m, device, steps, args.quick, timeouts.get(m, args.method_timeout)))
            r = rows[-1]
            print(
                f"full {m}: {r['status']} ({r['seconds']} s, {r.get('gpu_hours', '?')} GPU-h projected)",
                flush=True,
            )
            if "trace" in r:
                print(r["trace"], flush=True)
            write(args, env, steps, rows)  # after every row: a check cut short keeps what it measured

    write(args, env, steps, rows, echo=True)
    return 0 if all(r["status"] == "ok" for r in rows) else 1


def write(args: argparse.Namespace, env: dict, steps: int, rows: list[dict], echo: bool = False) -> None:
    """The table, printed when ``echo``, and written to ``--out`` (.md and .json)."""
    text = table(rows)
    projected = sum(r.get("gpu_hours", 0.0) for r in rows)
    header = (
        f"# GPU check\n\ndevice: {env['device']}; torch {env['torch']}; CUDA {env['cuda']}; "
        f"python {env['python']}; missing: {', '.join(env['missing_packages']) or 'none'}\n"
        f"full profile, projected total: {projected:.1f} GPU-hours (one device, runs in sequence)\n"
    )
    if echo:
        print("\n" + header + "\n" + text, flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text(header + "\n" + text + "\n")
    out.with_suffix(".json").write_text(
        json.dumps(
            {
                "environment": env,
                "steps": steps,
                "quick": args.quick,
                "method_timeout": args.method_timeout,
                "rows": rows,
            },
            indent=1,
            default=str,
        )
    )


if __name__ == "__main__":
    sys.exit(main())
