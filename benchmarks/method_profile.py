"""Where one seed of a method spends its time, on a device: its training calls and named functions.

    python benchmarks/method_profile.py rotnet --device cuda --time fit_probe,fit_nonlinear_probe
    python benchmarks/method_profile.py downstream_scaling --device cpu

Runs the method's ``run`` on one seed (``--seeds``), one process (``workers: 1``), the params.yaml profile
(``--profile``), and times every ``train.fit`` and ``packed.fit`` call, grouped by its ``desc`` with the
numbers in it replaced by ``#`` (``pretext seed #``, ``aligned pretrain # seed #``), and every call of the
method module's functions named in ``--time``; the rest of the run is ``other`` (data, models,
evaluation outside the fits). On CUDA the device is synchronised around each timed call. This answers
the question that decides how a method should use a GPU: is its time in training that packs (many short
fits of one architecture), or in work that does not (probes, merging evaluations)?

The table is printed and, with ``--out``, written as ``.md`` and ``.json``. Nested timings are not
subtracted from each other: a named function that calls ``fit`` counts those seconds in both rows.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))  # the GPU machine may run this without installing replikit

import torch  # noqa: E402  (after the sys.path insert above)

from replikit import packed, train  # noqa: E402
from replikit.methods import get_method, load_config  # noqa: E402

NUMBER = re.compile(r"[-+]?\d[\d.e-]*")  # 0, 2048, 0.003, 1e-3: one group for every seed and size


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Timings:
    """Seconds and calls per group, filled by the wrappers :meth:`wrap` installs."""

    def __init__(self, device: torch.device):
        self.device, self.groups = device, {}

    def add(self, group: str, seconds: float) -> None:
        calls, total = self.groups.get(group, (0, 0.0))
        self.groups[group] = (calls + 1, total + seconds)

    def timed(self, fn, group_of):
        def wrapper(*args, **kwargs):
            sync(self.device)
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                sync(self.device)
                self.add(group_of(kwargs), time.perf_counter() - t0)

        return wrapper

    @contextlib.contextmanager
    def wrap(self, module, names: list[str]):
        """Time ``train.fit``, ``packed.fit`` and ``module``'s functions ``names`` while inside."""

        def by_desc(prefix):
            return lambda kwargs: f"{prefix} {NUMBER.sub('#', kwargs.get('desc', ''))}"

        saved = [(train, "fit"), (packed, "fit")] + [(module, n) for n in names]
        originals = [getattr(m, n) for m, n in saved]
        train.fit = self.timed(train.fit, by_desc("fit:"))
        packed.fit = self.timed(packed.fit, by_desc("pack:"))
        for n in names:
            setattr(module, n, self.timed(getattr(module, n), lambda kwargs, n=n: f"{n}()"))
        try:
            yield self
        finally:
            for (m, n), fn in zip(saved, originals):
                setattr(m, n, fn)


def profile(method: str, device: str, profile_name: str, seeds: int, names: list[str]) -> dict:
    """One ``run`` of ``method`` on ``seeds`` seeds, timed; the rows and the total."""
    cfg = load_config(
        method, profile=profile_name or None, overrides={"device": device, "workers": 1, "n_seeds": seeds}
    )
    module = get_method(method)
    missing = [n for n in names if not callable(getattr(module, n, None))]
    if missing:
        raise SystemExit(f"{method} has no function {', '.join(missing)}")
    dev = train.resolve_device(device)
    timings = Timings(dev)
    with timings.wrap(module, names):
        sync(dev)
        t0 = time.perf_counter()
        module.run(cfg)
        sync(dev)
        total = time.perf_counter() - t0
    rows = [{"group": g, "calls": c, "seconds": round(s, 3)} for g, (c, s) in timings.groups.items()]
    rows.sort(key=lambda r: -r["seconds"])
    timed = sum(r["seconds"] for r in rows if not r["group"].endswith("()"))  # fit calls do not nest
    rows.append({"group": "other (outside any fit call)", "calls": 1, "seconds": round(total - timed, 3)})
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
    return {"method": method, "device": name, "seeds": seeds, "total_s": round(total, 3), "rows": rows}


def table(result: dict) -> str:
    lines = [
        f"{result['method']} on {result['device']}, {result['seeds']} seed(s): {result['total_s']} s",
        "",
        "| where | calls | seconds | share |",
        "|---|---|---|---|",
    ]
    for r in result["rows"]:
        share = r["seconds"] / result["total_s"] if result["total_s"] else float("nan")
        lines.append(f"| {r['group']} | {r['calls']} | {r['seconds']:.2f} | {share:.0%} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("method")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--profile", default="", help="default: params.yaml's profile")
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--time", default="", help="comma-separated functions of the method module")
    parser.add_argument("--out", default="", help="writes OUT.md and OUT.json")
    args = parser.parse_args(argv)
    names = [n for n in args.time.split(",") if n]
    result = profile(args.method, args.device, args.profile, args.seeds, names)
    text = table(result)
    print(text, flush=True)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.with_suffix(".md").write_text(text + "\n")
        out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
