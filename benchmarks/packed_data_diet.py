"""Packed runs on a real method: data_diet's default profile with each seed's arms in one vmapped model.

    python benchmarks/packed_data_diet.py --out reports/packed_data_diet.json     # on a GPU (about 2 min)
    python benchmarks/packed_data_diet.py --device cpu --quick                    # a tiny CPU run (tested)

The arm runs of ``--seeds`` seeds (15 arms a seed in the default profile: every rule at every keep
fraction, and the full data), timed two ways on one device: packs of ``--width`` (``pack: W``, one pack a
seed), and one run at a time in this process (``pack: 0``, ``workers: 1``). The score runs come first in
each, untimed (they warm the device up), so only the arm phase is timed. Prints seconds per arm run, the
speed-up, and how close the packed numbers come to the unpacked ones: each arm's mean test accuracy over
the seeds, both ways, and the largest difference (packing is another draw of the same seeds, not the same
numbers). The unpacked pass is cut to ``--unpacked-seeds`` seeds (its time is per run, so that is enough).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))  # the GPU machine may run this without installing replikit
os.environ.setdefault("REPLIKIT_PROGRESS", "0")

import torch  # noqa: E402  (after the sys.path insert above)

from replikit import train  # noqa: E402
from replikit.methods import data_diet, load_config  # noqa: E402


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_arms(cfg, device: torch.device) -> tuple[float, object]:
    """``data_diet.run(cfg)`` and the seconds of its arm phase alone (the score runs come first, untimed:
    they also warm the device up)."""
    seconds = {}
    run_many = train.run_many

    def timed(fn, tasks, *args, desc: str = "", **kwargs):
        sync(device)
        t0 = time.perf_counter()
        out = run_many(fn, tasks, *args, desc=desc, **kwargs)
        sync(device)
        seconds[desc] = time.perf_counter() - t0
        return out

    train.run_many = timed
    try:
        out = data_diet.run(cfg)
    finally:
        train.run_many = run_many
    return sum(v for k, v in seconds.items() if k.startswith("data diet")), out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--quick", action="store_true", help="smoke profile, 2 seeds (CPU tests)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--unpacked-seeds", type=int, default=1)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--out", default="")
    args = parser.parse_args(argv)
    device = train.resolve_device(args.device)
    profile, seeds = ("smoke", 2) if args.quick else ("default", args.seeds)
    base = load_config(
        "data_diet", profile=profile, overrides={"device": str(device), "workers": 1, "n_seeds": seeds}
    )
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"device {name} | torch {torch.__version__} | data_diet {profile}, {seeds} seeds", flush=True)
    rows = []
    results = {}
    for label, update in (
        (f"pack {args.width}", {"pack": args.width}),
        ("one at a time", {"pack": 0, "n_seeds": min(args.unpacked_seeds, seeds)}),
    ):
        seconds, out = timed_arms(base.model_copy(update=update), device)
        results[label] = out.runs
        rows.append(
            {
                "variant": label,
                "runs": len(out.runs),
                "seconds": seconds,
                "s_per_run": seconds / len(out.runs),
            }
        )
        print(rows[-1], flush=True)
    packed_runs, one = results[f"pack {args.width}"], results["one at a time"]
    common = sorted(set(one["seed"]))
    a = packed_runs[packed_runs["seed"].isin(common)].groupby("arm")["test_acc"].mean()
    b = one.groupby("arm")["test_acc"].mean()
    diff = (a - b).abs().max()
    speedup = rows[1]["s_per_run"] / rows[0]["s_per_run"]
    print(f"\ndata_diet arm runs on {name}: {'variant':14s} runs  seconds  s/run")
    for r in rows:
        print(f"  {r['variant']:14s} {r['runs']:5d} {r['seconds']:8.1f} {r['s_per_run']:6.3f}")
    print(
        f"packed speed-up per run: {speedup:.1f}x; mean test accuracy per arm over seeds {common}: "
        f"largest |packed - one at a time| {diff:.4f}"
    )
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(
            json.dumps(
                {
                    "device": name,
                    "torch": torch.__version__,
                    "profile": profile,
                    "rows": rows,
                    "speedup": speedup,
                    "max_abs_diff_arm_mean_acc": float(diff),
                    "packed_arm_means": a.round(4).to_dict(),
                    "unpacked_arm_means": b.round(4).to_dict(),
                },
                indent=1,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
