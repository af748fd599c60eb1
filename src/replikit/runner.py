"""Execute a method's notebook headlessly: ``python -m replikit.runner METHOD [options]``.

    python -m replikit.runner elr                       # params.yaml's settings -> results/elr/
    python -m replikit.runner elr --profile smoke       # any other settings -> scratch/elr/
    python -m replikit.runner elr --profile smoke --set noise_rate=0.6 --out /tmp/elr

The notebook is read from its jupytext source (``notebooks/<method>.py``), the config is validated
*before* the notebook runs (an unknown or out-of-range key fails at once, naming it), the real data
sets the config names are checked to be on disk (with the command that fetches them), and papermill
runs it with parameters ``profile``, ``overrides`` and ``out_dir``; a parameter the notebook does not
declare is an error, not papermill's warning. A failing notebook's error is printed with its root
cause (the exception's type and message from the kernel), and the executed copy is kept at
``logs/<method>.failed.ipynb``. The kernel is started first (:class:`EarlyKernel`): it boots and imports
the notebook's modules while the runner imports its own and runs the checks.

Nothing lost, nothing stale: a failed run (a bad parameter, an exception in the method, Ctrl-C,
SIGKILL) leaves the last good ``results/<method>/`` byte-identical. The notebook never writes the
results folder itself: it saves into ``results/.<method>.next-<tag>``, the runner adds the executed
notebook, and only then swaps that complete folder in with :func:`replikit.results.swap` (two renames,
with Ctrl-C and SIGTERM held back). A kill between the two renames is undone by
:func:`replikit.results.recover` on the next start. DVC would delete a stage's outputs before running
it, so ``dvc.yaml`` marks the method stage's outputs ``persist: true`` and leaves the replacing to us.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shutil
import signal
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

import yaml

# light modules only; results, resume, the data and the method (torch) load inside execute
from replikit import config, processes


class RunnerError(RuntimeError):
    pass


def notebook_path(method: str, root: Path) -> Path:
    path = root / "notebooks" / f"{method}.py"
    if not path.is_file():
        known = sorted(p.stem for p in path.parent.glob("*.py") if not p.name.startswith("_"))
        raise RunnerError(f"unknown method {method!r}: no notebook {path} (known: {', '.join(known)})")
    return path


def declared_parameters(nb) -> set[str]:
    """Names assigned in the notebook's ``parameters`` cell."""
    import ast

    cells = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    if len(cells) != 1:
        raise RunnerError(f"the notebook needs exactly one cell tagged 'parameters' (found {len(cells)})")
    tree = ast.parse(cells[0].source)
    return {
        t.id
        for node in tree.body
        if isinstance(node, ast.Assign)
        for t in node.targets
        if isinstance(t, ast.Name)
    }


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``["noise_rate=0.6", "model=mlp"]`` -> ``{"noise_rate": 0.6, "model": "mlp"}`` (YAML values)."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise RunnerError(f"--set {item!r}: expected KEY=VALUE")
        out[key.strip()] = yaml.safe_load(value)
    return out


def _kernel_manager_class():
    """A kernel manager that starts quietly and stops cleanly.

    IPC sockets in a private temporary folder instead of TCP on localhost: ipykernel warns about
    unencrypted TCP on every start. At shutdown jupyter_client first sends SIGINT, which the idle
    kernel reports as "KeyboardInterrupt caught in kernel"; the shutdown request alone suffices (an
    unresponsive kernel is still killed after its grace period).
    """
    from jupyter_client.manager import AsyncKernelManager

    class QuietKernelManager(AsyncKernelManager):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.ipc_dir = tempfile.mkdtemp(prefix="replikit-kernel-")
            self.transport = "ipc"
            self.ip = os.path.join(self.ipc_dir, "k")

        async def _async_interrupt_kernel(self) -> None:
            if not self.shutting_down:
                await super()._async_interrupt_kernel()

        async def _async_cleanup_resources(self, restart: bool = False) -> None:
            await super()._async_cleanup_resources(restart=restart)
            if not restart:
                shutil.rmtree(self.ipc_dir, ignore_errors=True)

    return QuietKernelManager


class EarlyKernel:
    """The notebook's kernel, started before the runner's own imports and checks rather than after them.

    The kernel boots and imports what the notebook's first cell imports (torch, the shared modules, the
    method) while the runner imports the same and validates the config: on two cores the two overlap, a
    few seconds per stage. The warm-up is a silent execution (no output, no execution count); importing
    is all it does, so the notebook runs as in a fresh kernel, and an import that fails there fails again
    in the notebook's own cell, with its traceback. papermill then uses this kernel (``km``); the runner
    shuts it down, also when a check fails before the notebook starts.
    """

    def __init__(self, method: str, root: Path):
        from jupyter_core.utils import run_sync

        self.km = _kernel_manager_class()(kernel_name="python3")
        run_sync(self.km.start_kernel)(cwd=str(root))
        modules = ["replikit.claims", "replikit.plots", "replikit.results", "replikit.sequential"]
        if method.isidentifier():
            modules.append(f"replikit.methods.{method}")
        self.used = False  # set when the notebook starts on it
        self._warm = threading.Thread(target=self._warm_up, args=(modules,), daemon=True)
        self._warm.start()

    def _warm_up(self, modules: list[str]) -> None:
        from jupyter_client.blocking import BlockingKernelClient

        kc = BlockingKernelClient()
        kc.load_connection_info(self.km.get_connection_info())
        try:
            kc.start_channels()
            kc.wait_for_ready(timeout=120)
            code = "\n".join(f"try:\n    import {m}\nexcept Exception:\n    pass" for m in modules)
            kc.execute(code, silent=True, store_history=False, reply=True, timeout=300)
        except Exception:  # noqa: BLE001  (a warm-up only: the notebook reports any real failure)
            pass
        finally:
            kc.stop_channels()

    def ready(self, timeout: float = 300.0) -> None:
        self._warm.join(timeout)

    def shutdown(self) -> None:
        """A kernel that ran the notebook stops gracefully (its exit handlers stop its worker processes);
        one that a failed check left unused is stopped at once, so the error is not kept waiting."""
        from jupyter_core.utils import run_sync

        if run_sync(self.km.is_alive)():
            run_sync(self.km.shutdown_kernel)(now=not self.used)
        else:
            run_sync(self.km.cleanup_resources)()


def root_cause(err: BaseException) -> str:
    """``ValueError: data/default/... is damaged ...`` for papermill's errors (their ename/evalue)."""
    ename, evalue = getattr(err, "ename", None), getattr(err, "evalue", None)
    if ename:
        cell = getattr(err, "exec_count", None)
        return f"{ename}: {evalue}" + (f" (cell [{cell}])" if cell else "")
    return f"{type(err).__name__}: {err}"


def check_real_data(cfg: config.MethodConfig, root: Path) -> None:
    """Fail before the notebook runs when the config names real data sets that are not on disk."""
    from replikit.data import real

    absent = real.missing(real.named_in(cfg), root / real.EXTERNAL)
    if absent:
        names = " ".join(absent)
        raise RunnerError(
            f"{cfg.profile} profile needs real data not found under {root / real.EXTERNAL}: "
            f"{', '.join(absent)}. "
            f"Fetch once with `python -m replikit.data.fetch {names}`, then `dvc commit -f data.dvc`."
        )


@contextlib.contextmanager
def signals_held():
    """Ctrl-C, SIGTERM and SIGHUP wait until the block ends (SIGKILL cannot: see results.recover)."""
    held = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def execute(
    method: str,
    profile: str | None = None,
    overrides: dict[str, Any] | None = None,
    out_dir: str | Path | None = None,
    root: str | Path | None = None,
    extra_parameters: dict[str, Any] | None = None,
) -> Path:
    """Run ``notebooks/<method>.py``; return the results folder. Raises on any failure."""
    root = Path(root) if root else config.find_root()
    notebook_path(method, root)  # an unknown method fails before a kernel starts
    os.environ.setdefault("REPLIKIT_PROGRESS", "0")  # the kernel inherits it: its bars would flood the log
    os.environ[config.DEFER_CLEAR_ENV] = "1"  # keep the run store until the results are swapped in
    kernel = EarlyKernel(method, root)
    try:
        return _execute(method, profile, overrides, out_dir, root, extra_parameters, kernel)
    finally:
        kernel.shutdown()
        os.environ.pop(config.DEFER_CLEAR_ENV, None)


def sweep_running(logs: Path, method: str) -> list[Path]:
    """Remove ``<method>.running-<tag>.ipynb`` files that no live process writes (left by a killed run);
    return them. A live run's file is left alone (the tag is its pid and start time: :mod:`replikit.processes`)."""
    gone = []
    for f in logs.glob(f"{method}.running-*.ipynb"):
        if not processes.owner_alive(f.name[len(f"{method}.running-") : -len(".ipynb")]):
            f.unlink(missing_ok=True)
            gone.append(f)
    return gone


def check_out(out: Path, root: Path, method: str) -> None:
    """Refuse a results folder whose replacing would lose something: the project or a folder above it,
    or a folder that holds anything but an earlier run of this method (the swap replaces it whole)."""
    out, root = out.resolve(), root.resolve()
    if out == root or out in root.parents:
        raise RunnerError(f"--out {out}: the project folder or one above it; name a folder of its own")
    if out.exists() and not out.is_dir():
        raise RunnerError(f"--out {out}: a file, not a folder")
    if not out.is_dir() or not any(out.iterdir()):
        return
    verdict = out / "verdict.json"
    if not verdict.is_file():
        held = ", ".join(sorted(p.name for p in out.iterdir())[:5])
        raise RunnerError(
            f"--out {out} holds other files ({held}, ...), and the run would replace the folder whole: "
            "name a new or empty folder, or one an earlier run of this method wrote"
        )
    try:
        owner = json.loads(verdict.read_text()).get("method")
    except (ValueError, AttributeError):
        owner = None
    if owner != method:
        raise RunnerError(
            f"--out {out} holds the results of {owner or 'an unreadable verdict.json'}, not {method}"
        )


def default_out(method: str, cfg, root: Path, profile, overrides) -> Path:
    """``results/<method>`` for the run ``dvc repro`` makes from params.yaml; any other (another profile,
    pilot seeds, a ``--set``) goes to ``scratch/<method>``, so that the pipeline's results, the report and
    the README's table only ever hold what params.yaml says."""
    from replikit.methods import load_config

    if not (profile or overrides):
        return root / "results" / method
    planned = load_config(method, params_file=root / "params.yaml")
    if config.config_hash(cfg) == config.config_hash(planned):
        return root / "results" / method
    out = root / "scratch" / method
    print(
        f"{method}: these settings are not params.yaml's, so the results go to {out.relative_to(root)}/ "
        f"(--out results/{method} to replace the pipeline's)",
        file=sys.stderr,
    )
    return out


def _execute(method, profile, overrides, out_dir, root: Path, extra_parameters, kernel: EarlyKernel) -> Path:
    import jupytext
    import papermill

    from replikit import results, resume
    from replikit.methods import load_config

    cfg = load_config(method, profile=profile, overrides=overrides, params_file=root / "params.yaml")
    sections = (config.read_params(root / "params.yaml").get(method) or {}).get("profiles") or {}
    if cfg.profile not in sections:  # a new method before its params.yaml section: say what sized it
        print(
            f"{method}: params.yaml has no {method}.profiles.{cfg.profile} section, so the Config's defaults "
            "size this run",
            file=sys.stderr,
        )
    out = Path(out_dir) if out_dir else default_out(method, cfg, root, profile, overrides)
    out = out if out.is_absolute() else root / out
    results.recover(out)  # first: a previous run killed mid-swap
    check_out(out, root, method)
    check_real_data(cfg, root)
    nb = jupytext.read(notebook_path(method, root))
    staging = out.parent / f".{out.name}.next-{processes.tag()}"
    parameters = {"profile": cfg.profile, "overrides": dict(overrides or {}), "out_dir": str(staging)}
    parameters.update(extra_parameters or {})
    unknown = set(parameters) - declared_parameters(nb)
    if unknown:
        raise RunnerError(
            f"notebook {method}.py does not declare parameter(s) {sorted(unknown)} "
            f"(declared: {sorted(declared_parameters(nb))})"
        )
    logs = root / "logs"
    logs.mkdir(exist_ok=True)
    sweep_running(logs, method)
    # one file per process: two runs of one method at once (two lanes crossing on it) must not share it
    running = logs / f"{method}.running-{processes.tag()}.ipynb"
    kernel.ready()
    kernel.used = True
    try:
        try:
            papermill.execute_notebook(
                nb,
                str(running),
                parameters=parameters,
                kernel_name="python3",
                language="python",
                cwd=str(root),
                progress_bar=sys.stderr.isatty() and not os.environ.get("CI"),
                km=kernel.km,
            )
        except BaseException as err:
            failed = logs / f"{method}.failed.ipynb"
            if running.exists():
                running.replace(failed)
            if isinstance(err, KeyboardInterrupt):
                raise
            cause = root_cause(err)
            raise RunnerError(f"{method}: notebook failed: {cause}; executed copy: {failed}") from err
        if not (staging / "verdict.json").is_file():
            raise RunnerError(f"{method}: the notebook finished but wrote no verdict.json in {staging}")
        shutil.move(running, staging / f"{method}.ipynb")
        with signals_held():
            results.swap(staging, out)
        (logs / f"{method}.failed.ipynb").unlink(missing_ok=True)  # an earlier failure, now superseded
        resume.clear(resume.store_folder(root, method, cfg))  # the runs are safe in results/ now
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m replikit.runner",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("method")
    parser.add_argument("--profile", choices=config.PROFILES, help="default: params.yaml's profile")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one of the method's parameters (repeatable)",
    )
    parser.add_argument(
        "--out",
        help="results folder, relative to the current folder (default: results/<method> for params.yaml's "
        "settings, scratch/<method> for any other); a folder with other files in it is refused",
    )
    args = parser.parse_args(argv)
    out_dir = Path(args.out).expanduser().absolute() if args.out else None
    try:
        out = execute(args.method, args.profile, parse_overrides(args.overrides), out_dir)
    except (config.ConfigError, RunnerError, KeyError) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"replikit.runner: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        # the notebook client's cancelled cell would be reported at exit as "Task exception was never
        # retrieved", with the kernel's traceback: noise after the one line that matters
        logging.getLogger("asyncio").setLevel(logging.CRITICAL)
        print(
            f"replikit.runner: {args.method}: interrupted; its results are unchanged. "
            "Run the same command again to resume: finished runs and checkpoints are kept",
            file=sys.stderr,
        )
        return 130
    print(f"{args.method}: results in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
