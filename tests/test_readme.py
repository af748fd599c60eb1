"""The README's commands work as written, and the output it quotes is what they print."""

from __future__ import annotations

import json
import re
import shlex
import time

import pytest
from conftest import ROOT, sh

README = (ROOT / "README.md").read_text()


def transcripts() -> list[tuple[str, list[str]]]:
    """``$ command`` lines of the README's code blocks, each with the output lines quoted below it."""
    out: list[tuple[str, list[str]]] = []
    in_block, current = False, None
    for line in README.splitlines():
        if line.startswith("```"):
            in_block, current = not in_block, None
        elif in_block and line.startswith("$ "):
            current = (line[2:], [])
            out.append(current)
        elif current:
            current[1].append(line)
    return out


def matches(printed: str, quoted: str) -> bool:
    """A quoted line ending in ``...)`` or ``...`` elides the rest of the printed line."""
    head, sep, _ = quoted.partition("...")
    return printed.startswith(head) if sep else printed == quoted


@pytest.mark.parametrize("command,quoted", transcripts(), ids=[c for c, _ in transcripts()])
def test_readme_transcript_is_what_the_command_prints(command, quoted):
    assert quoted, f"{command}: the README quotes no output"
    printed = sh(*shlex.split(command), cwd=ROOT, check=False).splitlines()
    assert len(printed) == len(quoted) and all(map(matches, printed, quoted)), (
        f"README:\n{chr(10).join(quoted)}\nprinted:\n{chr(10).join(printed)}"
    )


def test_readme_has_transcripts():
    assert len(transcripts()) >= 2


def sweep_commands() -> list[str]:
    row = next(line for line in README.splitlines() if line.startswith("| sweep a parameter |"))
    return [c for c in re.findall(r"`([^`]+)`", row) if c.startswith("dvc ")]


def queue_busy(status: str) -> bool:
    return any(word in status for word in ("Queued", "Running"))


@pytest.mark.slow
def test_readme_sweep_as_written(smoke_repo):
    """Each of the sweep row's commands, in order, on the smoke copy: the sweep queues and runs two
    ELR experiments, one per noise rate, each with its own metrics."""
    commands = sweep_commands()
    assert commands[0].startswith("dvc exp run --queue") and any("queue start" in c for c in commands)
    for command in commands:
        log = sh("bash", "-c", command, cwd=smoke_repo)
        if "queue start" in command:  # the worker runs in the background: `dvc queue status` until done
            deadline = time.monotonic() + 600
            while queue_busy(status := sh("dvc", "queue", "status", cwd=smoke_repo)):
                assert time.monotonic() < deadline, status
                time.sleep(2)
            assert "Failed" not in status, status + sh("dvc", "queue", "logs", "--help", cwd=smoke_repo)
    assert "Experiment" in log  # `dvc exp show`, the last command, prints its table
    shown = json.loads(sh("dvc", "exp", "show", "--json", cwd=smoke_repo))
    rates = {}
    for commit in shown:
        for exp in commit.get("experiments") or []:
            for rev in exp["revs"]:
                data = rev["data"]
                rates[data["params"]["params.yaml"]["data"]["elr"]["noise_rate"]] = data["metrics"]
    assert set(rates) == {0.6, 0.8}, rates
    assert all(
        m["results/elr/metrics.json"]["data"]["elr.final_gain.effect"] is not None for m in rates.values()
    )
    sh("dvc", "exp", "remove", "--all-commits", cwd=smoke_repo)  # leave the shared copy as it was
