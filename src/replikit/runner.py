"""Execute a method's notebook headlessly: ``python -m replikit.runner METHOD [options]``.

    python -m replikit.runner elr                       # params.yaml's profile -> results/elr/
    python -m replikit.runner elr --profile smoke --set noise_rate=0.6 --out /tmp/elr

The notebook is read from its jupytext source (``notebooks/<method>.py``), the config is validated
*before* a kernel starts (an unknown or out-of-range key fails at once, naming it), and papermill runs
it with parameters ``profile``, ``overrides`` and ``out_dir``; a parameter the notebook does not
declare is an error, not papermill's warning. On success the executed notebook joins the results
folder; on failure it is kept at ``logs/<method>.failed.ipynb`` with the traceback, the previous
results are left untouched and the exit status is non-zero.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import yaml

from replikit import config
from replikit.methods import load_config


class RunnerError(RuntimeError):
    pass


def notebook_path(method: str, root: Path) -> Path:
    path = root / "notebooks" / f"{method}.py"
    if not path.is_file():
        raise RunnerError(f"no notebook {path} for method {method!r}")
    return path


def declared_parameters(nb) -> set[str]:
    """Names assigned in the notebook's ``parameters`` cell."""
    import ast

    cells = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    if len(cells) != 1:
        raise RunnerError(f"the notebook needs exactly one cell tagged 'parameters' (found {len(cells)})")
    tree = ast.parse(cells[0].source)
    return {t.id for node in tree.body if isinstance(node, ast.Assign) for t in node.targets if isinstance(t, ast.Name)}


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``["noise_rate=0.6", "model=mlp"]`` -> ``{"noise_rate": 0.6, "model": "mlp"}`` (YAML values)."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise RunnerError(f"--set {item!r}: expected KEY=VALUE")
        out[key.strip()] = yaml.safe_load(value)
    return out


def execute(
    method: str,
    profile: str | None = None,
    overrides: dict[str, Any] | None = None,
    out_dir: str | Path | None = None,
    root: str | Path | None = None,
    extra_parameters: dict[str, Any] | None = None,
) -> Path:
    """Run ``notebooks/<method>.py``; return the results folder. Raises on any failure."""
    import jupytext
    import papermill

    root = Path(root) if root else config.find_root()
    cfg = load_config(method, profile=profile, overrides=overrides, params_file=root / "params.yaml")
    out = Path(out_dir) if out_dir else root / "results" / method
    out = out if out.is_absolute() else root / out
    nb = jupytext.read(notebook_path(method, root))
    parameters = {"profile": cfg.profile, "overrides": dict(overrides or {}), "out_dir": str(out)}
    parameters.update(extra_parameters or {})
    unknown = set(parameters) - declared_parameters(nb)
    if unknown:
        raise RunnerError(
            f"notebook {method}.py does not declare parameter(s) {sorted(unknown)} "
            f"(declared: {sorted(declared_parameters(nb))})"
        )
    logs = root / "logs"
    logs.mkdir(exist_ok=True)
    running = logs / f"{method}.running.ipynb"
    os.environ.setdefault("REPLIKIT_PROGRESS", "0")  # the kernel inherits it: its bars would flood the log
    try:
        papermill.execute_notebook(
            nb,
            str(running),
            parameters=parameters,
            kernel_name="python3",
            language="python",
            cwd=str(root),
            progress_bar=sys.stderr.isatty() and not os.environ.get("CI"),
        )
    except BaseException as err:
        failed = logs / f"{method}.failed.ipynb"
        if running.exists():
            running.replace(failed)
        raise RunnerError(f"{method}: notebook failed ({type(err).__name__}); executed copy: {failed}") from err
    if not (out / "verdict.json").is_file():
        raise RunnerError(f"{method}: the notebook finished but wrote no {out / 'verdict.json'}")
    shutil.move(running, out / f"{method}.ipynb")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m replikit.runner", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("method")
    parser.add_argument("--profile", choices=config.PROFILES, help="default: params.yaml's profile")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override one of the method's parameters (repeatable)")
    parser.add_argument("--out", help="results folder (default: results/<method>)")
    args = parser.parse_args(argv)
    try:
        out = execute(args.method, args.profile, parse_overrides(args.overrides), args.out)
    except (config.ConfigError, RunnerError, KeyError) as err:
        print(f"replikit.runner: {err}", file=sys.stderr)
        return 2
    print(f"{args.method}: results in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
