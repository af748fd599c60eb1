"""``make gpu-suite``: the default suite on a GPU, timed against the committed CPU run, verdicts compared.

    python benchmarks/gpu_suite.py --budget 420 --out reports/gpu-latest/gpu_suite   # on the GPU machine
    python benchmarks/gpu_suite.py --device cpu --profile smoke --methods critical_periods --out /tmp/s  # a CPU test

Each method's notebook runs as ``dvc repro`` runs it (``replikit.runner.execute``, a fresh kernel, the
params.yaml profile) with ``device`` set to ``--device``, into a temporary folder: ``results/`` is never
touched. A method whose profile pins its device in params.yaml (grokking and critical_periods keep their
launch-bound batched programs on the CPU cores, where ``dvc repro`` on a GPU machine runs them too)
keeps it, and its row says so, unless ``--set METHOD.device=...`` says otherwise. Per method the table
gives the stage's wall time, the seconds inside its runs (``runtime_s`` of its verdict.json) and the
same for the committed CPU results (``--reference``, default ``results/``), and, claim by claim, whether
the device's verdict equals the CPU's and whether the two intervals overlap (a rerun on other hardware
is a fresh draw of the same seeds, so equal numbers are not expected; a decided verdict that flips, or
intervals that do not overlap, are what to look at).

The summary line is the issue's goal: the device's total against a quarter of the CPU's, over the
methods that ran on both. ``--placement GPU_JSON CORES_JSON`` runs nothing: from a run on the GPU and
one on the same machine's CPU cores (``--device cpu``), it puts each method where it ran faster and
gives the suite's total under that placement, against the committed 2-core CPU times.

Methods not started within ``--budget`` seconds are ``skipped`` (one started
just before then still finishes). A failing method is reported and the next one runs. The table is
printed after every method and written to ``--out`` (``.md`` and ``.json``), so a call cut short still
brings back the rows it finished. ``data/default`` is prepared first when it is absent (a fresh checkout).

``--lanes`` uses the whole machine: a GPU lane (``--device``, the methods params.yaml does not pin to the
CPU, on ``--gpu-cores`` of the CPU cores for its host processes) and a cores lane (``device: cpu``, every
method, on the other cores) run side by side, each one method at a time, from opposite ends of one
ordering: the GPU lane starts with the methods that issue the fewest device operations per second of
their 2-core CPU run (``benchmarks/op_count.py``), the cores lane with the pinned methods and then those
that issue the most. Each lane is a process pinned to its cores; after ``--limit`` seconds a lane still
running is killed with its kernels and workers, and its finished rows still count. From both lanes'
times it prints each method's faster place and the two-lane placement: each method in the lane that
makes the later lane finish first (every split tried), the suite's time in runs under it against the
committed 2-core CPU times, and which methods to pin to the cores.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))  # the GPU machine may run this without installing replikit
os.environ.setdefault("REPLIKIT_PROGRESS", "0")

import yaml  # noqa: E402  (after the sys.path insert above)

from replikit.lanes import kill_tree, pin_to, pinned_device, split_cores  # noqa: E402

GOAL = 0.25  # the device's time over the CPU's

GPU_FIRST = [
    "data_diet",
    "elr",
    "sla",
    "ties_merging",
    "model_soups",
    "downstream_scaling",
    "dann",
    "uncertainty_weighting",
    "task_arithmetic",
    "rotnet",
    "gradnorm",
]
"""The GPU lane's order: device operations per second of each method's 2-core CPU run, fewest first (the
op-count table of docs/gpu.md, 2026-12-05: data_diet 1,500 ... gradnorm 14,800). The fewer operations a second
of CPU work issues, the more work each launch carries, and the more a GPU gains over the cores. The cores
lane runs the same list from the other end; methods not listed come last in both."""


def compare(cpu: dict, dev: dict) -> dict:
    """Claim-by-claim agreement of two verdict.json files: same verdict, overlapping intervals."""
    ref = {c["id"]: c for c in cpu.get("claims", [])}
    same = overlap = n = 0
    flips = []
    for c in dev.get("claims", []):
        r = ref.get(c["id"])
        if r is None:
            continue
        n += 1
        if c["verdict"] == r["verdict"]:
            same += 1
        else:
            flips.append(f"{c['id']}: {r['verdict']} -> {c['verdict']}")
        lo, hi = c.get("ci_low"), c.get("ci_high")
        rlo, rhi = r.get("ci_low"), r.get("ci_high")
        if None in (lo, hi, rlo, rhi) or (lo <= rhi and rlo <= hi):
            overlap += 1
    return {"claims": n, "same_verdict": same, "overlapping_ci": overlap, "flips": flips}


def row_for(method: str, wall: float, out: Path, reference: Path) -> dict:
    dev = json.loads((out / "verdict.json").read_text())
    row = {
        "method": method,
        "status": "ok",
        "device": dev.get("device"),
        "wall_s": round(wall, 1),
        "runs_s": dev.get("runtime_s"),
    }
    ref_file = reference / method / "verdict.json"
    if ref_file.is_file():
        cpu = json.loads(ref_file.read_text())
        if cpu.get("profile") == dev.get("profile"):
            row.update(cpu_runs_s=cpu.get("runtime_s"), cpu_device=cpu.get("device"), **compare(cpu, dev))
        else:
            row["note"] = f"reference is the {cpu.get('profile')} profile: neither timed nor compared"
    return row


def summary(rows: list[dict]) -> dict:
    both = [r for r in rows if r.get("status") == "ok" and r.get("cpu_runs_s") and r.get("runs_s")]
    dev = sum(r["runs_s"] for r in both)
    cpu = sum(r["cpu_runs_s"] for r in both)
    out = {
        "methods_timed": len(both),
        "device_runs_s": round(dev, 1),
        "cpu_runs_s": round(cpu, 1),
        "device_wall_s": round(sum(r["wall_s"] for r in rows if r.get("status") == "ok"), 1),
        "ratio": round(dev / cpu, 3) if cpu else None,
    }
    if out["ratio"] is not None:
        out["goal_met"] = out["ratio"] <= GOAL
    claims = [r for r in rows if "claims" in r]
    if claims:
        out["claims"] = sum(r["claims"] for r in claims)
        out["same_verdict"] = sum(r["same_verdict"] for r in claims)
        out["overlapping_ci"] = sum(r["overlapping_ci"] for r in claims)
    return out


def table(rows: list[dict], head: str) -> str:
    lines = [
        head,
        "",
        "| method | status | stage wall s | s in runs | CPU s in runs | ratio | same verdict | CIs overlap |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ratio = f"{r['runs_s'] / r['cpu_runs_s']:.2f}" if r.get("runs_s") and r.get("cpu_runs_s") else "-"
        same = f"{r['same_verdict']}/{r['claims']}" if "claims" in r else "-"
        ci = f"{r['overlapping_ci']}/{r['claims']}" if "claims" in r else "-"
        on = f" (on {r['device']})" if r.get("device") == "cpu" and "cpu" not in head.split(" (")[0] else ""
        lines.append(
            f"| {r['method']}{on} | {r['status']} | {r.get('wall_s', '-')} | {r.get('runs_s', '-')} "
            f"| {r.get('cpu_runs_s', '-')} | {ratio} | {same} | {ci} |"
        )
    s = summary(rows)
    lines += [
        "",
        f"total over {s['methods_timed']} methods: {s['device_runs_s']} s in runs against "
        f"{s['cpu_runs_s']} s on the CPU reference (ratio {s['ratio']}, goal <= {GOAL}); "
        f"stage wall {s['device_wall_s']} s",
    ]
    if "claims" in s:
        lines.append(
            f"verdicts: {s['same_verdict']}/{s['claims']} the same as the CPU's, "
            f"{s['overlapping_ci']}/{s['claims']} intervals overlapping"
        )
    flips = [f for r in rows for f in r.get("flips", [])]
    lines += [f"- flipped: {f}" for f in flips]
    return "\n".join(lines)


def placement(gpu_rows: list[dict], core_rows: list[dict]) -> dict:
    """Each method's faster place on a GPU machine, from a run of the suite on its GPU and one on its CPU
    cores (``--device cpu``), compared on the seconds inside the runs; a method timed in one run only
    takes that one. The suite's total under that placement, against the same methods' committed 2-core
    CPU times, is the quarter-time goal asked of the whole machine."""

    def timed(rows):
        return {r["method"]: r for r in rows if r.get("status") == "ok" and r.get("runs_s")}

    def on_gpu(r):  # a GPU run's row, unless params.yaml pinned the method to the cores there
        return r.get("lane") == "gpu" or (r.get("lane") is None and r.get("device") != "cpu")

    gpu, cores = timed(gpu_rows), timed(core_rows)
    rows = []
    for method in [*gpu, *(m for m in cores if m not in gpu)]:
        options = [r for r in (gpu.get(method), cores.get(method)) if r is not None]
        best = min(options, key=lambda r: r["runs_s"])
        rows.append(
            {
                "method": method,
                "gpu_s": gpu[method]["runs_s"] if method in gpu and on_gpu(gpu[method]) else None,
                "cores_s": next((r["runs_s"] for r in options if not on_gpu(r)), None),
                "best": "gpu" if on_gpu(best) else "cores",
                "runs_s": best["runs_s"],
                "cpu_runs_s": best.get("cpu_runs_s"),
                **{k: best[k] for k in ("claims", "same_verdict", "overlapping_ci") if k in best},
            }
        )
    both = [r for r in rows if r["cpu_runs_s"]]
    machine, reference = sum(r["runs_s"] for r in both), sum(r["cpu_runs_s"] for r in both)
    ratio = round(machine / reference, 3) if reference else None
    return {
        "rows": rows,
        "methods_timed": len(both),
        "machine_runs_s": round(machine, 1),
        "cpu_runs_s": round(reference, 1),
        "ratio": ratio,
        "goal_met": ratio is not None and ratio <= GOAL,
        "to_pin": sorted(r["method"] for r in rows if r["best"] == "cores" and r["gpu_s"] is not None),
    }


def two_lanes(rows: list[dict]) -> dict:
    """The two-lane placement over :func:`placement`'s rows: each method on the GPU or the cores so that
    the later of the two lanes finishes first (every split tried; a method timed in one place only stays
    there; ties go to the smaller sum). The lanes run side by side, so the suite takes the later lane's
    time, against the same methods' committed 2-core CPU times."""
    fixed_gpu = [r for r in rows if r["cores_s"] is None and r["gpu_s"] is not None]
    fixed_cores = [r for r in rows if r["gpu_s"] is None and r["cores_s"] is not None]
    free = [r for r in rows if r["gpu_s"] is not None and r["cores_s"] is not None]
    best = None
    for mask in range(1 << len(free)):
        gpu = fixed_gpu + [r for i, r in enumerate(free) if mask >> i & 1]
        cores = fixed_cores + [r for i, r in enumerate(free) if not mask >> i & 1]
        g, c = sum(r["gpu_s"] for r in gpu), sum(r["cores_s"] for r in cores)
        key = (round(max(g, c), 6), round(g + c, 6))
        if best is None or key < best[0]:
            best = (key, gpu, cores, g, c)
    _, gpu, cores, g, c = best
    timed = [r for r in gpu + cores if r["cpu_runs_s"]]
    reference = sum(r["cpu_runs_s"] for r in timed)
    makespan = max(g, c)
    ratio = round(makespan / reference, 3) if reference else None
    # what a plain `dvc repro` on the machine takes in its runs: every method timed on the GPU there, the
    # others (the pinned ones) on the cores, one after another
    plain = [(r["gpu_s"] if r["gpu_s"] is not None else r["cores_s"], r["cpu_runs_s"]) for r in rows]
    plain_s, plain_ref = sum(t for t, c in plain if c), sum(c for _, c in plain if c)
    return {
        "plain_s": round(plain_s, 1),
        "plain_ratio": round(plain_s / plain_ref, 3) if plain_ref else None,
        "gpu": [r["method"] for r in gpu],
        "cores": [r["method"] for r in cores],
        "gpu_s": round(g, 1),
        "cores_s": round(c, 1),
        "makespan_s": round(makespan, 1),
        "methods_timed": len(timed),
        "cpu_runs_s": round(reference, 1),
        "ratio": ratio,
        "goal_met": ratio is not None and ratio <= GOAL,
        "to_pin": sorted(r["method"] for r in cores if r["gpu_s"] is not None),
    }


def two_lanes_text(t: dict) -> str:
    lines = [
        f"two lanes side by side, each method where the later lane ends first: GPU lane "
        f"{', '.join(t['gpu']) or '-'} ({t['gpu_s']} s in runs); cores lane {', '.join(t['cores']) or '-'} "
        f"({t['cores_s']} s): the suite in {t['makespan_s']} s of runs against {t['cpu_runs_s']} s on 2 CPU "
        f"cores, {t['methods_timed']} methods (ratio {t['ratio']}, goal <= {GOAL}: "
        f"{'met' if t['goal_met'] else 'not met'})"
    ]
    if t["to_pin"]:
        lines.append(f"for that placement pin `device: cpu` in params.yaml for: {', '.join(t['to_pin'])}")
    lines.append(
        f"one lane, as a plain `dvc repro` runs here (the GPU for every method timed there, one after "
        f"another): {t['plain_s']} s in runs (ratio {t['plain_ratio']})"
    )
    return "\n".join(lines)


def placement_table(p: dict) -> str:
    lines = [
        "| method | s in runs on the GPU | on the CPU cores | faster | 2-core CPU s | same verdict |",
        "|---|---|---|---|---|---|",
    ]
    for r in p["rows"]:
        same = f"{r['same_verdict']}/{r['claims']}" if "claims" in r else "-"
        lines.append(
            f"| {r['method']} | {r['gpu_s'] if r['gpu_s'] is not None else '-'} "
            f"| {r['cores_s'] if r['cores_s'] is not None else '-'} | {r['best']} "
            f"| {r['cpu_runs_s'] or '-'} | {same} |"
        )
    lines += [
        "",
        f"each method in its faster place, {p['methods_timed']} methods: {p['machine_runs_s']} s in runs "
        f"against {p['cpu_runs_s']} s on 2 CPU cores (ratio {p['ratio']}, goal <= {GOAL}: "
        f"{'met' if p['goal_met'] else 'not met'})",
    ]
    if p["to_pin"]:
        lines.append(
            f"faster on the cores than on the GPU (pin `device: cpu` there): {', '.join(p['to_pin'])}"
        )
    return "\n".join(lines)


def pinned(params: dict, method: str, profile: str) -> bool:
    """Whether params.yaml pins ``method``'s device at ``profile`` (a launch-bound program kept on the CPU
    cores even on a GPU machine, as ``dvc repro`` runs it there)."""
    return pinned_device(params, method, profile) is not None


def overrides_for(method: str, sets: dict, device, pin: bool = False) -> dict:
    """``device`` (unless params.yaml pins the method's, ``pin``) plus the ``--set`` values for ``method``:
    plain keys go to every method, ``m.key`` to m (a ``--set`` device overrides a pinned one)."""
    out = {} if pin else {"device": str(device)}
    for key, value in sets.items():
        target, dot, name = key.rpartition(".")
        if not dot:
            out[key] = value
        elif target == method:
            out[name] = value
    return out


def run_method(method: str, profile: str, overrides: dict, tmp: Path, reference: Path) -> dict:
    """One notebook as ``dvc repro`` runs it, into ``tmp``; its row (an error is a row too)."""
    from replikit import resume, runner
    from replikit.methods import load_config

    t0 = time.perf_counter()
    try:
        # a timing runs every run: runs an earlier call left in the run store (one cut off, say) are
        # cleared, not read back
        cfg = load_config(method, profile=profile, overrides=overrides, params_file=ROOT / "params.yaml")
        resume.clear(resume.store_folder(ROOT, method, cfg))
        t0 = time.perf_counter()
        folder = runner.execute(method, profile=profile, overrides=overrides, out_dir=tmp / method, root=ROOT)
        return row_for(method, time.perf_counter() - t0, folder, reference)
    except Exception as err:  # noqa: BLE001  (the next method still runs)
        first = str(err).splitlines()[0][:300] if str(err) else ""
        status = f"error: {type(err).__name__}: {first}"
        return {"method": method, "status": status, "wall_s": round(time.perf_counter() - t0, 1)}


def lane_methods(methods: list[str], params: dict, profile: str) -> tuple[list[str], list[str]]:
    """``--lanes``' two orders: the GPU lane's (the methods params.yaml does not pin, :data:`GPU_FIRST`'s
    order) and the cores lane's (the pinned methods, then the others from the other end)."""
    pins = [m for m in methods if pinned(params, m, profile)]
    free = [m for m in methods if m not in pins]
    rank = {m: i for i, m in enumerate(GPU_FIRST)}
    gpu = sorted(free, key=lambda m: rank.get(m, len(rank)))
    cores = pins + sorted(free, key=lambda m: -rank.get(m, -1))
    return gpu, cores


def span(cpus: list[int]) -> str:
    return str(cpus[0]) if len(cpus) == 1 else f"{cpus[0]}-{cpus[-1]}"


def run_lanes(args, methods: list[str], params: dict, profile: str, reference: Path) -> int:
    """``--lanes``: the GPU lane and the cores lane side by side, each a ``gpu_suite.py`` process pinned to
    its cores, killed with everything under it after ``--limit`` s; then both lanes' placement."""
    import signal
    from functools import partial

    from replikit import train

    try:  # no CUDA here: say so now, not after the cores lane's minutes
        train.resolve_device(args.device)
    except RuntimeError as err:
        raise SystemExit(f"--lanes: {err}; --device cpu runs the GPU lane on the CPU (a test)") from None
    gpu_methods, core_methods = lane_methods(methods, params, profile)
    gpu_cpus, core_cpus = split_cores(sorted(os.sched_getaffinity(0)), args.gpu_cores)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    lanes = {
        "gpu": (args.device, gpu_methods, gpu_cpus),
        "cores": ("cpu", core_methods, core_cpus),
    }
    print(
        f"two lanes: gpu on {args.device} with CPU cores {span(gpu_cpus)}: {', '.join(gpu_methods) or '-'}; "
        f"cores on CPU cores {span(core_cpus)}: {', '.join(core_methods)}",
        flush=True,
    )
    ensure_data()  # once, before the lanes could both start preparing it
    common = ["--profile", profile, "--budget", str(args.budget), "--reference", str(reference)]
    common += [f"--set={v}" for v in args.set]
    for name in lanes:  # a lane cut off before its first row must not leave an earlier run's rows to read
        for suffix in (".json", ".md"):
            Path(f"{out}_{name}{suffix}").unlink(missing_ok=True)
    procs: dict[str, subprocess.Popen] = {}
    t0 = time.perf_counter()
    for name, (device, todo, cpus) in lanes.items():
        if todo:
            cmd = [sys.executable, __file__, "--device", device, "--methods", ",".join(todo), "--lane", name]
            procs[name] = subprocess.Popen(
                [*cmd, "--out", f"{out}_{name}", *common],
                preexec_fn=partial(pin_to, cpus),
            )

    def stop(*_):
        for proc in procs.values():
            kill_tree(proc.pid)

    before = signal.signal(signal.SIGTERM, lambda *a: (stop(), sys.exit(124)))  # a `timeout` around us
    walls: dict[str, float | None] = {}
    try:
        while len(walls) < len(procs):
            for name, proc in procs.items():
                if name not in walls and proc.poll() is not None:
                    walls[name] = round(time.perf_counter() - t0, 1)
                    print(f"[{name}] lane done in {walls[name]} s", flush=True)
            if time.perf_counter() - t0 > args.limit:
                cut = [name for name in procs if name not in walls]
                print(f"cut off after {args.limit} s: {', '.join(cut)}", flush=True)
                stop()
                walls.update({name: None for name in cut})
            time.sleep(0.5)
    except BaseException:  # Ctrl-C: the lanes go too
        stop()
        raise
    finally:
        signal.signal(signal.SIGTERM, before)

    def read(name):
        f = Path(f"{out}_{name}.json")
        return json.loads(f.read_text())["rows"] if f.is_file() else []

    rows = {name: read(name) for name in lanes}
    gpu_rows, core_rows = rows["gpu"], rows["cores"]
    p = placement(gpu_rows, core_rows)
    t = two_lanes(p["rows"])
    head = f"the suite in two lanes ({profile} profile): GPU lane on {args.device}, cores lane on the CPU"
    walls_text = ", ".join(
        f"{name} lane {'cut off at ' + str(args.limit) if w is None else w} s wall "
        f"({sum(r.get('status') == 'ok' for r in rows[name])} of {len(lanes[name][1])} methods ok)"
        for name, w in ((n, walls.get(n)) for n in procs)
    )
    text = "\n".join([head, "", placement_table(p), "", two_lanes_text(t), f"measured: {walls_text}"])
    print(text, flush=True)
    out.with_suffix(".md").write_text(text + "\n")
    report = {
        "head": head,
        "lanes": {
            name: {"device": d, "methods": m, "cpus": c, "wall_s": walls.get(name)}
            for name, (d, m, c) in lanes.items()
        },
        "gpu": gpu_rows,
        "cores": core_rows,
        "placement": p,
        "two_lanes": t,
    }
    out.with_suffix(".json").write_text(json.dumps(report, indent=1))
    return 0


def ensure_data() -> None:
    if not (ROOT / "data" / "default").is_dir():
        print("data/default is absent: preparing it", flush=True)
        subprocess.run(
            [sys.executable, "-m", "replikit.data.prepare", str(ROOT / "data" / "default")], check=True
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu")
    parser.add_argument("--profile", default="", help="default: params.yaml's profile")
    parser.add_argument("--methods", default="", help="comma-separated (default: params.yaml's methods)")
    parser.add_argument("--budget", type=float, default=420.0, help="seconds; later methods are skipped")
    parser.add_argument("--reference", default="results", help="the CPU run's results folder")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        help="KEY=VALUE for every method, or METHOD.KEY=VALUE for one (e.g. elr.pack=16)",
    )
    parser.add_argument("--out", default="reports/gpu_suite", help="writes OUT.md and OUT.json")
    parser.add_argument(
        "--placement",
        nargs=2,
        metavar=("GPU_JSON", "CORES_JSON"),
        help="runs nothing: from a GPU run's and a CPU-core run's .json, each method's faster place",
    )
    parser.add_argument(
        "--lanes", action="store_true", help="a GPU lane and a cores lane side by side (see above)"
    )
    parser.add_argument("--gpu-cores", type=int, default=2, help="--lanes: CPU cores for the GPU lane")
    parser.add_argument("--limit", type=float, default=600.0, help="--lanes: seconds before both are cut off")
    parser.add_argument("--lane", default="", help=argparse.SUPPRESS)  # a lane of --lanes: terse output
    args = parser.parse_args(argv)
    if args.placement:
        runs = [json.loads(Path(f).read_text())["rows"] if Path(f).is_file() else [] for f in args.placement]
        p = placement(*runs)
        print(placement_table(p), "", two_lanes_text(two_lanes(p["rows"])), sep="\n", flush=True)
        return 0
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    methods = [m for m in args.methods.split(",") if m] or params["methods"]
    profile = args.profile or params.get("profile", "default")
    reference = Path(args.reference)
    reference = reference if reference.is_absolute() else ROOT / reference
    if args.lanes:
        return run_lanes(args, methods, params, profile, reference)

    import torch

    from replikit import runner, train

    device = train.resolve_device(args.device)
    sets = runner.parse_overrides(args.set)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    head = (
        f"default suite on {name} ({profile} profile, torch {torch.__version__}, CUDA {torch.version.cuda})"
    )
    tag = f"[{args.lane}] " if args.lane else ""
    if not args.lane:
        print(head, flush=True)
    ensure_data()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    deadline = time.perf_counter() + args.budget
    rows: list[dict] = []
    text = table(rows, head)
    with tempfile.TemporaryDirectory() as tmp:
        for m in methods:
            if time.perf_counter() > deadline:
                rows.append({"method": m, "status": "skipped: time budget spent"})
            else:
                over = overrides_for(m, sets, device, pinned(params, m, profile))
                rows.append(run_method(m, profile, over, Path(tmp), reference))
                if args.lane:
                    rows[-1]["lane"] = args.lane
            print(f"{tag}{m}: {rows[-1]['status']} ({rows[-1].get('wall_s', '-')} s)", flush=True)
            text = table(rows, head)
            out.with_suffix(".md").write_text(text + "\n")
            out.with_suffix(".json").write_text(
                json.dumps({"head": head, "rows": rows, "summary": summary(rows)}, indent=1)
            )
    if not args.lane:  # a lane's table is its --lanes parent's to print
        print(text, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
