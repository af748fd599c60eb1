"""Shared fixtures: the project root, a smoke-profile notebook runner, the verdict contract check."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("REPLIKIT_PROGRESS", "0")


@pytest.fixture(autouse=True)
def _in_root(monkeypatch):
    """Tests run from the project root, as users and DVC do."""
    monkeypatch.chdir(ROOT)


def check_verdict(path: Path, method: str, profile: str) -> dict:
    """Validate results/<method>/verdict.json against the contract (replikit.report.VerdictFile)."""
    from replikit.report import VerdictFile

    raw = json.loads(path.read_text())
    verdict = VerdictFile.model_validate(raw)
    assert verdict.method == method and verdict.profile == profile
    assert verdict.evidence is (profile != "smoke")
    assert verdict.claims, "a verdict without claims"
    for claim in verdict.claims:
        assert claim.id.startswith(f"{method}.")
        if claim.ci_low is not None:
            assert claim.ci_low <= claim.effect <= claim.ci_high
    return raw
