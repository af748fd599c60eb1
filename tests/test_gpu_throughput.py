"""benchmarks/gpu_throughput.py in its tiny CPU mode: every variant runs and the table is written."""

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_quick_cpu_mode_times_every_variant(tmp_path):
    spec = importlib.util.spec_from_file_location("gpu_throughput", ROOT / "benchmarks" / "gpu_throughput.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--device", "cpu", "--quick", "--out", str(tmp_path / "t.json")]) == 0
    rows = json.loads((tmp_path / "t.json").read_text())["rows"]
    assert [r["variant"] for r in rows] == ["bare, plain", "bare, channels_last", "train.fit (prepare_model)"]
    assert all(r["images_per_s"] > 0 for r in rows)
