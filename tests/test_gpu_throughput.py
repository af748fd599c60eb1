"""benchmarks/gpu_throughput.py in its tiny CPU mode: every variant runs and the table is written."""

import json
from pathlib import Path

import pytest
from conftest import benchmark

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = [
    "bare, plain",
    "bare, channels_last",
    "bare, channels_last, fused SGD",
    "train.fit (prepare_model)",
]


@pytest.fixture(scope="module")
def gpu_throughput():
    return benchmark("gpu_throughput")


def test_quick_cpu_mode_times_every_variant_at_every_batch_size(gpu_throughput, tmp_path, capsys):
    out = tmp_path / "t.json"
    assert gpu_throughput.main(["--device", "cpu", "--quick", "--batches", "4,8", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    rows = report["rows"]
    assert [(r["batch"], r["variant"]) for r in rows] == [(b, v) for b in (4, 8) for v in VARIANTS]
    for r in rows:  # fused SGD may be missing for a device in some torch: an error row, never a crash
        assert r["images_per_s"] > 0 or r["variant"].endswith("fused SGD") and r["error"]
    assert [s["batch"] for s in report["summary"]] == [4, 8]
    assert all(s["fit_over_bare"] > 0 and s["fit_over_baseline"] > 0 for s in report["summary"])
    printed = capsys.readouterr().out
    assert "batch 4: train.fit / best bare:" in printed and "batch 8: train.fit / best bare:" in printed


def test_variants_past_the_budget_are_skipped_and_the_table_still_printed(gpu_throughput, tmp_path):
    out = tmp_path / "t.json"
    assert gpu_throughput.main(["--device", "cpu", "--quick", "--budget", "0", "--out", str(out)]) == 1
    rows = json.loads(out.read_text())["rows"]
    assert [(r["batch"], r["variant"]) for r in rows] == [(8, v) for v in VARIANTS]  # --quick: batch 8
    assert all(r["error"] == "skipped: time budget spent" for r in rows)
