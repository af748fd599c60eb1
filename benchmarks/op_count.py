"""How many device operations a method's run issues, counted on the CPU: the launch-bound GPU's cost.

    python benchmarks/op_count.py elr --set pack=16                # a packed ELR run, as CUDA runs it
    python benchmarks/op_count.py rotnet --profile smoke --top 15

A default-profile run on a GPU is launch-bound: each operation costs the host's dispatch and a kernel
launch, whatever its size, so the number of operations a run issues is what its GPU time follows, and
that number does not depend on the device. This runs ``METHOD``'s ``run`` on the CPU, in one process
(``workers: 1``), one look (``n_max: 0``), with ``--set`` overrides (a pack width, as ``pack: auto``
gives on CUDA), optimisers fused as on CUDA (``train.build_optimizer``), and counts every ATen operation
that would run on the device under a ``TorchDispatchMode``: views, reshapes and reads of host scalars are
not counted (no kernel), nor are the profiler's markers.

Host reads (``.item()`` and the like) are counted apart: on CUDA a read of a GPU tensor waits for the
queue to drain (the step counters of torch's non-fused optimisers stay on the host: free there).
A method's helpers listed in ``HELPERS`` (rotnet's probes) are groups of their own; work that a CUDA run
does on the host (rotnet's L-BFGS probes unless ``linear_probe_device: run``, dann's two-moons toy) is
flagged and left out of the device total.

Prints the total, the operations per training step of each ``train.fit`` / ``packed.fit`` call group
(``desc`` with its numbers replaced by ``#``; per step = the group's operations, evaluation included,
over its steps) and the ``--top`` most frequent operations; ``--out`` writes ``.md`` and ``.json``. What an
operation costs on a GPU is measured there, not here (``gpu_vmap.py``'s plain 1-D CNN run took 1.9 ms a
step on an H200).
"""

from __future__ import annotations

import argparse
import collections
import inspect
import json
import os
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))  # the GPU machine may run this without installing replikit
os.environ.setdefault("REPLIKIT_PROGRESS", "0")

import torch  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402

from replikit import packed, train  # noqa: E402
from replikit.methods import get_method, load_config  # noqa: E402

# no kernel: views and metadata, host scalar reads, profiler markers
NOT_COUNTED = {
    "_local_scalar_dense",
    "_record_function_enter_new",
    "_record_function_exit",
    "_reshape_alias",
    "_unsafe_view",
    "alias",
    "as_strided",
    "detach",
    "diagonal",
    "expand",
    "lift_fresh",
    "permute",
    "select",
    "slice",
    "split",
    "split_with_sizes",
    "squeeze",
    "t",
    "transpose",
    "unbind",
    "unflatten",
    "unsqueeze",
    "view",
}
NUMBER = re.compile(r"[-+]?\d[\d.e-]*")
# .item() and the like: on CUDA a read of a GPU tensor waits for the queue to drain (a non-fused
# optimiser's step counter stays on the host, so its reads are free there; the CPU cannot tell them apart)
HOST_READ = "_local_scalar_dense"

# helpers of a method that are counted as groups of their own, and whether a CUDA run does that work on
# the host (a predicate of the config): group -> (module attribute, steps of a call, on the host?)
HELPERS = {
    "rotnet": {
        "linear probes (L-BFGS)": (
            "fit_probe",
            lambda a: a["iters"],
            lambda c: c.linear_probe_device == "cpu",
        ),
        "non-linear probes": ("fit_nonlinear_probe", lambda a: a["steps"], lambda c: False),
    },
}
# fit groups (by their desc) that a CUDA run keeps on the host whatever the config
HOST_GROUPS = {"dann": ("moons ",)}


class Counter(TorchDispatchMode):
    """Counts the ATen operations dispatched while active, by name, into the current group."""

    def __init__(self):
        super().__init__()
        self.ops: collections.Counter[str] = collections.Counter()
        self.groups: dict[str, list[int]] = {}  # group -> [operations, steps, host reads]
        self.group: str | None = None
        self.host_reads = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if name not in NOT_COUNTED:
            self.ops[name] += 1
            if self.group is not None:
                self.groups[self.group][0] += 1
        elif name == HOST_READ:
            self.host_reads += 1
            if self.group is not None:
                self.groups[self.group][2] += 1
        return func(*args, **(kwargs or {}))


def group_name(desc: str) -> str:
    return NUMBER.sub("#", desc)


def fused_like_cuda(params, optimizer, lr, device, *, weight_decay=0.0, momentum=0.9, foreach=None):
    """``train.build_optimizer`` as it builds on CUDA: fused Adam and SGD (one update for all tensors)."""
    if optimizer == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, fused=True)
    if optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay, fused=True)
    raise ValueError(f"optimizer={optimizer!r}: allowed adam | sgd")


def cuda_width(method: str) -> int:
    """The pack width ``pack: auto`` resolves to on CUDA for ``method``'s default config (0: no packing)."""
    config = get_method(method).Config
    return config(device="cuda").pack if "pack" in config.model_fields else 0


def count(method: str, profile: str, sets: dict) -> dict:
    overrides = {"device": "cpu", "workers": 1, "n_max": 0, **sets}
    cfg = load_config(method, profile=profile, overrides=overrides)
    counter = Counter()
    real_fit, real_pack, real_build = train.fit, packed.fit, train.build_optimizer
    assert packed.build_optimizer is real_build  # packed.fit builds through the same function

    def in_group(fn, steps_of, name=None):
        def wrapper(*args, **kwargs):
            before = counter.group
            counter.group = name or group_name(kwargs.get("desc", fn.__name__))
            counter.groups.setdefault(counter.group, [0, 0, 0])[1] += steps_of(args, kwargs)
            try:
                return fn(*args, **kwargs)
            finally:
                counter.group = before

        return wrapper

    def steps_of(fn, steps):
        signature = inspect.signature(fn)

        def of(args, kwargs):
            bound = signature.bind(*args, **kwargs).arguments
            return steps(bound)

        return of

    def fit_steps(a):
        return a["epochs"] * max(1, a["n"] // min(a["batch_size"], a["n"]))

    module = sys.modules[get_method(method).run.__module__]
    helpers = {
        name: (attr, getattr(module, attr), steps, on_host)
        for name, (attr, steps, on_host) in HELPERS.get(method, {}).items()
    }
    host = {name for name, (*_, on_host) in helpers.items() if on_host(cfg)}
    train.fit = in_group(real_fit, steps_of(real_fit, fit_steps))
    packed.fit = in_group(real_pack, steps_of(real_pack, lambda a: a["epochs"] * a["steps_per_epoch"]))
    train.build_optimizer = packed.build_optimizer = fused_like_cuda
    for name, (attr, fn, steps, _) in helpers.items():
        setattr(module, attr, in_group(fn, steps_of(fn, steps), name))
    t0 = time.perf_counter()
    try:
        with counter:
            get_method(method).run(cfg)
    finally:
        train.fit, packed.fit = real_fit, real_pack
        train.build_optimizer = packed.build_optimizer = real_build
        for attr, fn, *_ in helpers.values():
            setattr(module, attr, fn)
    host |= {g for g in counter.groups if g.startswith(HOST_GROUPS.get(method, ()))}
    total = sum(counter.ops.values())
    return {
        "method": method,
        "profile": profile,
        "sets": sets,
        "ops": total,
        "device_ops": total - sum(counter.groups[g][0] for g in host),
        "host_reads": counter.host_reads,
        "device_host_reads": counter.host_reads - sum(counter.groups[g][2] for g in host),
        "seconds": round(time.perf_counter() - t0, 1),
        "groups": {
            g: {
                "ops": o,
                "steps": s,
                "ops_per_step": round(o / max(s, 1), 1),
                "host_reads": r,
                "on_host_on_cuda": g in host,
            }
            for g, (o, s, r) in counter.groups.items()
        },
        "outside_fits": total - sum(o for o, _, _ in counter.groups.values()),
        "top": counter.ops.most_common(),
    }


def report(r: dict, top: int) -> str:
    sets = ", ".join(f"{k}={v}" for k, v in r["sets"].items()) or "no overrides"
    lines = [
        f"{r['method']} ({r['profile']} profile, one look, {sets}): {r['ops']:,} operations "
        f"({r['outside_fits']:,} outside fit, pack and helper calls) and {r['host_reads']:,} host reads, "
        f"counted in {r['seconds']} s; on the device in a CUDA run: {r['device_ops']:,} operations and "
        f"{r['device_host_reads']:,} host reads (a sync where the value is on the GPU)",
        "",
        "| fit / pack / helper calls | steps | operations | per step | host reads |",
        "|---|---|---|---|---|",
    ]
    for g, v in sorted(r["groups"].items(), key=lambda kv: -kv[1]["ops"]):
        where = " (on the host in a CUDA run)" if v["on_host_on_cuda"] else ""
        lines.append(
            f"| {g}{where} | {v['steps']:,} | {v['ops']:,} | {v['ops_per_step']} | {v['host_reads']:,} |"
        )
    lines += ["", "| operation | count | share |", "|---|---|---|"]
    lines += [f"| {name} | {n:,} | {n / r['ops']:.1%} |" for name, n in r["top"][:top]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("method")
    parser.add_argument("--profile", default="default")
    parser.add_argument("--set", action="append", default=[], help="KEY=VALUE (e.g. pack=16), repeatable")
    parser.add_argument(
        "--cuda-width",
        action="store_true",
        help="pack at the width pack: auto gives on CUDA (if the method packs)",
    )
    parser.add_argument("--top", type=int, default=12, help="most frequent operations to list")
    parser.add_argument("--out", type=Path, help="writes OUT.md and OUT.json")
    args = parser.parse_args(argv)
    sets = {}
    for item in args.set:
        key, _, value = item.partition("=")
        sets[key] = json.loads(value) if value[:1] in "[{0123456789-" or value in ("true", "false") else value
    if args.cuda_width and "pack" not in sets and "pack" in get_method(args.method).Config.model_fields:
        sets["pack"] = cuda_width(args.method)
    torch.set_num_threads(1)
    r = count(args.method, args.profile, sets)
    text = report(r, args.top)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.with_suffix(".md").write_text(text + "\n")
        args.out.with_suffix(".json").write_text(json.dumps(r, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
