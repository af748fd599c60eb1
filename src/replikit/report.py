"""``python -m replikit.report``: gather ``results/*/verdict.json`` into ``reports/report.{md,html}``.

One row per claim: the paper's figure, ours as mean effect [95% CI] (n seeds), the verdict, runtime and
device; then each method's quote and figures (linked from the Markdown, embedded in the HTML so that
the file stands alone); provenance last (git commit, params hash, data hash, package versions).
Every verdict file is validated against the contract (:class:`VerdictFile`) before it is used.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import html
import os
import sys
from pathlib import Path
from typing import Literal

import pydantic
import yaml

from replikit.config import find_root

# ------------------------------------------------------------------ the verdict.json contract


class ClaimRecord(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="allow")

    id: str
    paper: str
    quote: str
    metric: str
    baseline: str | None
    treatment: str
    effect: float | None
    ci_low: float | None
    ci_high: float | None
    n_seeds: int = pydantic.Field(ge=0)
    delta: float = pydantic.Field(gt=0)
    paper_value: dict[str, float]
    verdict: Literal["reproduced", "not_reproduced", "inconclusive", "skipped"]

    @pydantic.model_validator(mode="after")
    def _judged_or_skipped(self) -> ClaimRecord:
        if self.verdict == "skipped":
            if not getattr(self, "reason", ""):
                raise ValueError(f"{self.id}: a skipped claim needs its reason")
        elif self.effect is None or self.n_seeds < 1:
            raise ValueError(f"{self.id}: a judged claim needs an effect and at least one seed")
        return self


class VerdictFile(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="allow")

    method: str
    profile: Literal["smoke", "default", "full"]
    evidence: bool
    claims: list[ClaimRecord]
    runtime_s: float = pydantic.Field(ge=0)
    device: str
    versions: dict[str, str]
    machine: dict[str, str | int] = {}  # absent in verdicts written before it was recorded
    git: str
    figures: list[str] = []


def read_verdicts(results: Path, order: list[str] | None = None) -> list[tuple[Path, VerdictFile]]:
    """Every ``results/*/verdict.json``, validated; in ``order`` (e.g. params.yaml's methods), then by name."""
    rank = {m: i for i, m in enumerate(order or [])}
    found = [p for p in results.glob("*/verdict.json") if not p.parent.name.startswith(".")]  # not staging
    paths = sorted(found, key=lambda p: (rank.get(p.parent.name, len(rank)), p.parent.name))
    out = []
    for path in paths:
        try:
            out.append((path.parent, VerdictFile.model_validate_json(path.read_text())))
        except pydantic.ValidationError as err:
            raise ValueError(f"{path}: does not follow the verdict contract:\n{err}") from None
    return out


# ------------------------------------------------------------------ provenance


def file_hash(*paths: Path) -> str:
    """sha256 over the files (recursively, sorted by path) of ``paths``; '-' if none exist."""
    h = hashlib.sha256()
    found = False
    for top in paths:
        files = (
            sorted(p for p in top.rglob("*") if p.is_file())
            if top.is_dir()
            else [top]
            if top.is_file()
            else []
        )
        for f in files:
            found = True
            h.update(str(f.relative_to(top.parent)).encode())
            h.update(f.read_bytes())
    return h.hexdigest()[:12] if found else "-"


# ------------------------------------------------------------------ formatting


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:+.3f}"


def _ours(c: ClaimRecord) -> str:
    if c.verdict == "skipped":
        return "-"
    ci = f" [{_pct(c.ci_low)}, {_pct(c.ci_high)}]" if c.ci_low is not None else " [no CI]"
    return f"{c.effect:+.3f}{ci} (n={c.n_seeds})"


def _means(c: ClaimRecord) -> str:
    t, b = getattr(c, "treatment_mean", None), getattr(c, "baseline_mean", None)
    if t is None:
        return "-"
    return f"{t:.3f}" if b is None else f"{t:.3f} vs {b:.3f}"


def _paper(c: ClaimRecord) -> str:
    return ", ".join(f"{k} {v:g}" for k, v in c.paper_value.items()) or "-"


def _delta(c: ClaimRecord) -> str:
    kind = getattr(c, "kind", "superiority")
    return f"> {c.delta:g}" if kind == "superiority" else f"> -{c.delta:g} (non-inf.)"


def _margin(c: ClaimRecord) -> str:
    m = getattr(c, "margin", None)
    return "-" if m is None else f"{m:+.1f}"


def _comparison(c: ClaimRecord) -> str:
    comp = getattr(c, "comparison", None) or f"{c.treatment} vs {c.baseline}"
    extra = " (relative)" if getattr(c, "relative", False) else ""
    base_metric = getattr(c, "baseline_metric", c.metric)
    if base_metric != c.metric:
        extra += f" (baseline: {base_metric})"
    return f"{comp} on {c.metric}{extra}"


def _verdict(c: ClaimRecord, v: VerdictFile) -> str:
    text = VERDICT_MARK[c.verdict]
    if c.verdict == "skipped":
        text += f": {c.reason}"
    return text + ("" if v.evidence else f" ({not_evidence(v)}: no evidence)")


def not_evidence(v: VerdictFile) -> str:
    """Why a verdict does not count: ``smoke`` (too small) or ``pilot seeds`` (the designs' own seeds)."""
    seeds = getattr(v, "seeds", None) or {}
    return "pilot seeds" if v.profile != "smoke" and seeds.get("role") == "pilot" else v.profile


VERDICT_MARK = {
    "reproduced": "reproduced",
    "not_reproduced": "not reproduced",
    "inconclusive": "inconclusive",
    "skipped": "skipped",
}


def summary(verdicts) -> str:
    claims = [c for _, v in verdicts for c in v.claims]
    counts = {k: sum(1 for c in claims if c.verdict == k) for k in VERDICT_MARK}
    return ", ".join(f"{n} {VERDICT_MARK[k]}" for k, n in counts.items() if n or k != "skipped") + (
        f" of {len(claims)} claims."
    )


def rows(verdicts: list[tuple[Path, VerdictFile]]) -> list[dict[str, str]]:
    """One row per claim; ``margin`` is the distance to a flip, in interval half-widths."""
    out = []
    for _, v in verdicts:
        for c in v.claims:
            out.append(
                {
                    "claim": c.id,
                    "comparison": _comparison(c),
                    "paper": _paper(c),
                    "ours: means": _means(c),
                    "ours: effect [CI] (n)": _ours(c),
                    "stop": getattr(c, "stop", "") or "-",
                    "delta": _delta(c),
                    "margin": _margin(c),
                    "verdict": _verdict(c, v),
                    "runtime": f"{v.runtime_s:.0f} s",
                    "device": v.device,
                }
            )
    return out


def _quote_label(c: ClaimRecord) -> str:
    return " (paraphrase, not a quote)" if getattr(c, "quote_kind", "verbatim") == "paraphrase" else ""


def _note(c: ClaimRecord) -> str:
    parts = [getattr(c, "note", "")]
    if getattr(c, "delta_reason", ""):
        parts.append(f"delta {c.delta:g}: {c.delta_reason}.")
    if getattr(c, "paper_source", ""):
        parts.append(f"Paper's numbers: {c.paper_source}.")
    return " ".join(p for p in parts if p)


README_START = "<!-- results:start (generated by `python -m replikit.report --readme`; do not edit) -->"
README_END = "<!-- results:end -->"


def readme_table(verdicts) -> str:
    """The README's results table, generated from the verdict files (never typed by hand)."""
    cols = ["claim", "comparison", "paper", "ours: effect [CI] (n)", "stop", "delta", "margin", "verdict"]
    lines = [summary(verdicts), "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(r[c].replace("|", "\\|") for c in cols) + " |" for r in rows(verdicts)]
    return "\n".join(lines)


def off_params(root: Path, verdicts) -> list[str]:
    """The verdicts that are not what ``dvc repro`` would compute from ``params.yaml`` now (another profile,
    pilot seeds, a ``--set`` or an edited section), each with the reason: the README's table is only for
    those it would compute."""
    from replikit.config import ConfigError, config_hash
    from replikit.methods import load_config

    out = []
    for _, v in verdicts:
        try:
            expected = config_hash(load_config(v.method, params_file=root / "params.yaml"))
        except (ConfigError, KeyError) as err:
            out.append(f"{v.method} ({err})")
            continue
        got = getattr(v, "config_hash", None)
        if not v.evidence:
            out.append(f"{v.method} ({not_evidence(v)}: no evidence)")
        elif got != expected:
            out.append(f"{v.method} (config {got}, params.yaml resolves to {expected})")
    return out


def update_readme(readme: Path, verdicts) -> bool:
    """Rewrite the README's generated results section; True if it changed."""
    text = readme.read_text()
    if README_START not in text or README_END not in text:
        raise ValueError(f"{readme}: no results markers ({README_START} ... {README_END})")
    head, rest = text.split(README_START, 1)
    _, tail = rest.split(README_END, 1)
    new = f"{head}{README_START}\n{readme_table(verdicts)}\n{README_END}{tail}"
    if new != text:
        readme.write_text(new)
    return new != text


def provenance(root: Path, verdicts: list[tuple[Path, VerdictFile]]) -> dict[str, str]:
    from replikit.results import git_commit, versions

    def by(key) -> str:  # "value (method, method); value (method)"
        groups: dict[str, list[str]] = {}
        for _, v in verdicts:
            groups.setdefault(key(v), []).append(v.method)
        if len(groups) == 1 and len(verdicts) > 1:
            return f"{next(iter(groups))} (all {len(verdicts)} methods)"
        return "; ".join(f"{val} ({', '.join(ms)})" for val, ms in groups.items()) or "-"

    def host(v: VerdictFile) -> str:
        m = v.machine
        if not m:
            return "not recorded"
        gpu = f", {m['gpu']}" if m.get("gpu", "none") != "none" else ""
        return f"{m.get('cpu')} ({m.get('cpu_capability')}, {m.get('cores')} cores){gpu}"

    prov = {
        "git": git_commit(root),
        # a method reruns only when its inputs change, so its results may come from an earlier commit
        "methods' commits": by(lambda v: v.git),
        # another machine is a fresh draw of the same seeds (float reduction order differs)
        "methods' machines": by(host),
        "params hash": file_hash(root / "params.yaml"),
        "data hash (data/default)": file_hash(root / "data" / "default"),
        "profiles": ", ".join(sorted({v.profile for _, v in verdicts})) or "-",
    }
    prov.update({f"version {k}": val for k, val in versions().items()})
    return prov


def to_markdown(verdicts, root: Path) -> str:
    table = rows(verdicts)
    lines = ["# replikit report", ""]
    if not table:
        lines += ["No results yet: run `dvc repro` (or `python -m replikit.runner METHOD`).", ""]
    else:
        lines += [summary(verdicts), ""]
        cols = list(table[0])
        lines += ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        lines += ["| " + " | ".join(r[c].replace("|", "\\|") for c in cols) + " |" for r in table]
        lines.append("")
    for folder, v in verdicts:
        lines += [f"## {v.method}", ""]
        for c in v.claims:
            lines += [f"> {c.quote}", f"> — {c.paper}{_quote_label(c)}", ""]
            note = _note(c)
            if note:
                lines += [f"*{c.id}*: {note}", ""]
        for fig in v.figures:
            rel = (
                Path("..") / (folder / fig).relative_to(root) if folder.is_relative_to(root) else folder / fig
            )
            lines.append(f"![{v.method} {Path(fig).stem}]({rel.as_posix()})")
        lines.append("")
    lines += ["## Provenance", ""]
    lines += [f"- {k}: `{val}`" for k, val in provenance(root, verdicts).items()]
    return "\n".join(lines) + "\n"


CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1400px;margin:2em auto;
padding:0 1em;color:#222;line-height:1.45;overflow-wrap:break-word}
table{border-collapse:collapse;width:100%;font-size:.8em;margin:1em 0}
th,td{border:1px solid #ddd;padding:.35em .5em;text-align:left;vertical-align:top}
th{background:#f3f4f6}
tr:nth-child(even) td{background:#fafafa}
td.nowrap{white-space:nowrap}
td small{color:#666}
td.verdict span{display:inline-block;padding:.05em .45em;border-radius:.3em;font-weight:600;color:#fff}
.reproduced span{background:#1a7f37}.not_reproduced span{background:#b42318}
.inconclusive span{background:#9a6700}.skipped span{background:#6b7280}
.summary{font-size:1.05em}
blockquote{border-left:4px solid #ccc;margin:.6em 0;padding:.1em .9em;color:#444}
figure{display:inline-block;margin:.4em;vertical-align:top}
figure img{max-width:520px;max-height:380px;border:1px solid #eee}
figcaption{font-size:.8em;color:#666;text-align:center}
code{background:#f3f4f6;padding:0 .25em}
"""


def to_html(verdicts, root: Path) -> str:
    e = html.escape
    table = rows(verdicts)
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>replikit report</title>",
        f"<style>{CSS}</style></head><body><h1>replikit report</h1>",
    ]
    if not table:
        parts.append("<p>No results yet: run <code>dvc repro</code>.</p>")
    else:
        cols = list(table[0])
        parts.append(f"<p class='summary'>{e(summary(verdicts))}</p>")
        parts.append("<table><tr>" + "".join(f"<th>{e(c)}</th>" for c in cols) + "</tr>")
        claims = [c for _, v in verdicts for c in v.claims]
        for r, c in zip(table, claims):
            cells = "".join(
                f"<td class='verdict {c.verdict}'><span>{e(r[k])}</span></td>"
                if k == "verdict"
                else f"<td class='nowrap'>{e(r[k])}</td>"
                if k.startswith("ours: effect")
                else f"<td><small>{e(r[k])}</small></td>"
                if k == "comparison"
                else f"<td>{e(r[k])}</td>"
                for k in cols
            )
            parts.append(f"<tr>{cells}</tr>")
        parts.append("</table>")
    for folder, v in verdicts:
        parts.append(f"<h2 id='{e(v.method)}'>{e(v.method)}</h2>")
        if not v.evidence:
            why = (
                "pilot seeds: computed on the seeds designs are settled on, so not evidence"
                if not_evidence(v) == "pilot seeds"
                else f"{v.profile} profile: computed, but too small to count as evidence"
            )
            parts.append(f"<p><em>{e(why)}.</em></p>")
        for c in v.claims:
            parts.append(f"<blockquote>{e(c.quote)}<br>— {e(c.paper)}{e(_quote_label(c))}</blockquote>")
            note = _note(c)
            if note:
                parts.append(f"<p><strong>{e(c.id)}</strong>: {e(note)}</p>")
        for fig in v.figures:
            path = folder / fig
            if path.is_file():
                data = base64.b64encode(path.read_bytes()).decode()
                parts.append(
                    f"<figure><img alt='{e(fig)}' src='data:image/png;base64,{data}'>"
                    f"<figcaption>{e(v.method)}: {e(Path(fig).stem)}</figcaption></figure>"
                )
    parts.append("<h2>Provenance</h2><ul>")
    parts += [f"<li>{e(k)}: <code>{e(val)}</code></li>" for k, val in provenance(root, verdicts).items()]
    parts.append("</ul></body></html>")
    return "\n".join(parts) + "\n"


def build(results: Path, reports: Path, root: Path) -> tuple[Path, Path]:
    params = root / "params.yaml"
    order = (yaml.safe_load(params.read_text()) or {}).get("methods", []) if params.is_file() else []
    verdicts = read_verdicts(results, order)
    reports.mkdir(parents=True, exist_ok=True)
    md, page = reports / "report.md", reports / "report.html"
    for path, text in ((md, to_markdown(verdicts, root)), (page, to_html(verdicts, root))):
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # two builds at once each write their own
        tmp.write_text(text)
        tmp.replace(path)
    return md, page


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m replikit.report", description=__doc__)
    parser.add_argument("--results", default="results")
    parser.add_argument("--out", default="reports")
    parser.add_argument(
        "--readme", action="store_true", help="also rewrite README.md's generated results table"
    )
    args = parser.parse_args(argv)
    root = find_root()
    try:
        md, page = build(root / args.results, root / args.out, root)
        if args.readme:
            params = yaml.safe_load((root / "params.yaml").read_text()) or {}
            verdicts = read_verdicts(root / args.results, params.get("methods", []))
            off = off_params(root, verdicts)
            if off:
                raise ValueError(
                    "README.md left as it was: its table is for the results `dvc repro` computes from "
                    f"params.yaml, and these are not: {'; '.join(off)}. Rerun them with `dvc repro`."
                )
            changed = update_readme(root / "README.md", verdicts)
            print(f"README.md results table {'rewritten' if changed else 'already current'}")
    except ValueError as err:
        print(f"replikit.report: {err}", file=sys.stderr)
        return 2
    print(f"wrote {md} and {page}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
