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

GOAL = 0.25  # the device's time over the CPU's


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

    gpu, cores = timed(gpu_rows), timed(core_rows)
    rows = []
    for method in [*gpu, *(m for m in cores if m not in gpu)]:
        options = [r for r in (gpu.get(method), cores.get(method)) if r is not None]
        best = min(options, key=lambda r: r["runs_s"])
        rows.append(
            {
                "method": method,
                "gpu_s": gpu[method]["runs_s"]
                if method in gpu and gpu[method].get("device") != "cpu"
                else None,
                "cores_s": next((r["runs_s"] for r in options if r.get("device") == "cpu"), None),
                "best": "cores" if best.get("device") == "cpu" else "gpu",
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
    section = params.get(method) or {}
    return "device" in section or "device" in ((section.get("profiles") or {}).get(profile) or {})


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
    from replikit import runner

    t0 = time.perf_counter()
    try:
        folder = runner.execute(method, profile=profile, overrides=overrides, out_dir=tmp / method, root=ROOT)
        return row_for(method, time.perf_counter() - t0, folder, reference)
    except Exception as err:  # noqa: BLE001  (the next method still runs)
        first = str(err).splitlines()[0][:300] if str(err) else ""
        status = f"error: {type(err).__name__}: {first}"
        return {"method": method, "status": status, "wall_s": round(time.perf_counter() - t0, 1)}


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
    args = parser.parse_args(argv)
    if args.placement:
        runs = [json.loads(Path(f).read_text())["rows"] if Path(f).is_file() else [] for f in args.placement]
        print(placement_table(placement(*runs)), flush=True)
        return 0

    import torch

    from replikit import runner, train

    device = train.resolve_device(args.device)
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    methods = [m for m in args.methods.split(",") if m] or params["methods"]
    profile = args.profile or params.get("profile", "default")
    sets = runner.parse_overrides(args.set)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    head = (
        f"default suite on {name} ({profile} profile, torch {torch.__version__}, CUDA {torch.version.cuda})"
    )
    print(head, flush=True)
    ensure_data()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    reference = Path(args.reference)
    reference = reference if reference.is_absolute() else ROOT / reference
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
            print(f"{m}: {rows[-1]['status']} ({rows[-1].get('wall_s', '-')} s)", flush=True)
            text = table(rows, head)
            out.with_suffix(".md").write_text(text + "\n")
            out.with_suffix(".json").write_text(
                json.dumps({"head": head, "rows": rows, "summary": summary(rows)}, indent=1)
            )
    print(text, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
