"""Do the verdicts survive a fresh draw? Rerun every method on a second confirmation base and compare.

    python benchmarks/verdict_stability.py                 # base B = params.yaml's confirmation + 1
    python benchmarks/verdict_stability.py --base 7 --methods elr dann
    python benchmarks/verdict_stability.py --compare-only  # reuse results-stability/ from an earlier run
    python benchmarks/verdict_stability.py --against REV   # results/ against the verdicts committed at REV

Base A is what ``dvc repro`` left in ``results/<method>/verdict.json`` (params.yaml's confirmation base).
Base B reruns each method's notebook through the runner with ``seed=confirmation:<B>`` into
``results-stability/<method>/`` (never touching DVC's results). A rerun on another machine is a fresh
draw too, since float reduction order differs; this makes the fresh draw explicit and local.

Prints one row per claim: verdict and n under A and B, whether they agree, and whether their intervals
overlap. The goal: every claim decided under both bases has the same verdict. Writes
``reports/verdict_stability.md``.

``--against REV`` reruns nothing: it sets the verdicts in ``results/`` (A) against those committed at a git
revision (B), read with ``git show``. After a ``dvc repro`` on your own machine, ``--against HEAD`` says
whether your draw of the same seeds agrees with the committed one (each ``verdict.json`` names the machine
it ran on); it only prints.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from replikit import runner  # noqa: E402

DECIDED = {"reproduced", "not_reproduced"}


def claims_of(path: Path) -> dict[str, dict]:
    return claims_in(json.loads(path.read_text()))


def claims_in(verdict: dict) -> dict[str, dict]:
    return {c["id"]: c for c in verdict["claims"]}


def committed_verdict(rev: str, method: str, root: Path | None = None) -> dict | None:
    """``results/<method>/verdict.json`` as committed at git revision ``rev`` (None if absent)."""
    done = subprocess.run(
        ["git", "show", f"{rev}:results/{method}/verdict.json"],
        cwd=root or ROOT,
        capture_output=True,
        text=True,
    )
    return json.loads(done.stdout) if done.returncode == 0 else None


def committed(rev: str, method: str, root: Path | None = None) -> dict[str, dict] | None:
    """The claims of ``results/<method>/verdict.json`` as committed at git revision ``rev`` (None if absent)."""
    verdict = committed_verdict(rev, method, root)
    return None if verdict is None else claims_in(verdict)


def is_revision(rev: str, root: Path | None = None) -> bool:
    done = subprocess.run(
        ["git", "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}"],
        cwd=root or ROOT,
        capture_output=True,
    )
    return done.returncode == 0


SETUP = ("profile", "seeds", "config_hash")  # a fresh draw of one run keeps these; another run does not


def other_setup(a: dict, b: dict) -> list[str]:
    """What makes two verdict files different runs rather than two draws of one: ``["profile smoke/default"]``."""
    return [f"{k} {a.get(k)}/{b.get(k)}" for k in SETUP if k in a and k in b and a[k] != b[k]]


def overlap(ca: dict, cb: dict) -> str:
    bounds = [ca.get("ci_low"), ca.get("ci_high"), cb.get("ci_low"), cb.get("ci_high")]
    if any(x is None for x in bounds):
        return "-"
    return "yes" if bounds[0] <= bounds[3] and bounds[2] <= bounds[1] else "no"


def compare(a: dict[str, dict], b: dict[str, dict]) -> list[dict]:
    rows = []
    for cid, ca in a.items():
        cb = b.get(cid, {"verdict": "missing", "n_seeds": 0})
        if ca["verdict"] in DECIDED and cb["verdict"] in DECIDED:
            status = "same" if ca["verdict"] == cb["verdict"] else "FLIP"
        elif ca["verdict"] == cb["verdict"]:
            status = "same"
        else:
            status = "decided once" if DECIDED & {ca["verdict"], cb["verdict"]} else "differs"
        rows.append(
            {
                "claim": cid,
                "A": f"{ca['verdict']} (n={ca['n_seeds']})",
                "B": f"{cb['verdict']} (n={cb['n_seeds']})",
                "status": status,
                "overlap": overlap(ca, cb),
                "verdicts": (ca["verdict"], cb["verdict"]),
            }
        )
    return rows


def table(rows: list[dict], title: str, under: str) -> str:
    """The markdown report: a summary line, then one row per claim."""
    both = [r for r in rows if set(r["verdicts"]) <= DECIDED]
    agree = sum(r["status"] == "same" for r in both)
    decided_a = sum(r["verdicts"][0] in DECIDED for r in rows)
    judged = [r for r in rows if r["overlap"] != "-"]
    lines = [
        f"# {title}",
        "",
        f"{agree} of {len(both)} claims decided under both {under} agree; {decided_a} of {len(rows)} claims "
        f"decided under A; {sum(r['status'] == 'FLIP' for r in rows)} flips; "
        f"{sum(r['status'] == 'decided once' for r in rows)} decided once; "
        f"{sum(r['overlap'] == 'yes' for r in judged)} of {len(judged)} intervals overlap.",
        "",
        "| claim | A | B | status | intervals overlap |",
        "|---|---|---|---|---|",
        *[f"| {r['claim']} | {r['A']} | {r['B']} | {r['status']} | {r['overlap']} |" for r in rows],
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--base", type=int, default=params["seeds"]["confirmation"] + 1)
    parser.add_argument("--methods", nargs="*", default=params["methods"])
    parser.add_argument("--out", default="results-stability")
    parser.add_argument("--compare-only", action="store_true")
    parser.add_argument(
        "--against", metavar="REV", help="compare results/ with the verdicts committed at REV"
    )
    args = parser.parse_args(argv)
    out = ROOT / args.out
    if args.against and not is_revision(args.against):
        print(f"--against {args.against}: not a git revision here", file=sys.stderr)
        return 2
    rows = []
    for m in args.methods:
        a_path = ROOT / "results" / m / "verdict.json"
        if not a_path.is_file():
            print(f"{m}: no results/{m}/verdict.json (run dvc repro first)", file=sys.stderr)
            return 2
        if args.against:
            a, b = json.loads(a_path.read_text()), committed_verdict(args.against, m)
            differ = other_setup(a, b) if b is not None else []
            if b is None:
                print(f"{m}: no results/{m}/verdict.json at {args.against}; left out", file=sys.stderr)
            elif differ:
                print(
                    f"{m}: another setup, not another draw ({', '.join(differ)}); left out", file=sys.stderr
                )
            else:
                rows += compare(claims_in(a), claims_in(b))
            continue
        if not args.compare_only:
            t = time.perf_counter()
            runner.execute(m, overrides={"seed": f"confirmation:{args.base}"}, out_dir=out / m, root=ROOT)
            print(f"{m}: base B rerun in {time.perf_counter() - t:.0f} s", file=sys.stderr)
        rows += compare(claims_of(a_path), claims_of(out / m / "verdict.json"))
    if args.against:
        print(table(rows, f"Verdicts: results/ (A) vs results/ at {args.against} (B)", "draws"))
        return 0
    base_a = params["seeds"]["confirmation"]
    text = table(rows, f"Verdict stability: confirmation base {base_a} (A) vs {args.base} (B)", "bases")
    (ROOT / "reports").mkdir(exist_ok=True)
    (ROOT / "reports" / "verdict_stability.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
