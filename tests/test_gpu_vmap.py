"""benchmarks/gpu_vmap.py in its tiny CPU mode: the table's fields, and the vmap pack trains each seed as
the plain loop does (same init, same batches)."""

import json

import pytest
import torch
from conftest import benchmark


@pytest.fixture(scope="module")
def gpu_vmap():
    return benchmark("gpu_vmap")


def test_quick_cpu_mode_writes_the_table(gpu_vmap, tmp_path, capsys):
    out = tmp_path / "v.json"
    assert gpu_vmap.main(["--device", "cpu", "--quick", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert [(r["variant"], r["S"]) for r in report["rows"]] == [("sequential", 2), ("vmap", 2)]
    for r in report["rows"]:
        assert r["wall_s"] > 0 and r["s_per_run"] == pytest.approx(r["wall_s"] / 2) and r["speedup"] > 0
    [c] = report["comparisons"]
    assert len(c["vmap_test_acc"]) == len(c["sequential_test_acc"]) == 2
    assert all(0.0 <= a <= 1.0 for a in c["vmap_test_acc"] + c["sequential_test_acc"])
    # same init, same batches: on the CPU the pack and the plain loop agree for every seed
    assert c["max_abs_diff_loss"] < 1e-4
    assert abs(c["vmap_test_acc"][0] - c["sequential_test_acc"][0]) < 1e-4
    [v] = report["invariance"]
    assert (v["S"], v["half"]) == (2, 1) and isinstance(v["bit_identical"], bool)
    assert v["max_abs_diff_params"] < 1e-4
    assert report["epochs"] == 1 and report["n_train"] == 512 and report["elapsed_s"] > 0
    printed = capsys.readouterr().out
    assert "speed-up" in printed and "pack 1 vs pack 2" in printed and "elapsed" in printed


def test_the_pack_trains_every_seed_as_the_plain_loop_does(gpu_vmap):
    cpu = torch.device("cpu")
    g = torch.Generator().manual_seed(5)
    x = torch.randn(160, 40, generator=g)
    y = torch.randint(0, 10, (160,), generator=g)
    d = {"x": x[:128], "y": y[:128], "x_test": x[128:], "y_test": y[128:]}
    pack = gpu_vmap.Pack([0, 1, 2], cpu)
    pack.train(d, epochs=2, batch=32)
    acc, loss = pack.evaluate(d)
    for i, seed in enumerate([0, 1, 2]):
        model = gpu_vmap.train_one(seed, d, 2, 32, cpu)
        for k, p in model.named_parameters():
            assert (pack.params_of(i)[k] - p.detach()).abs().max() < 1e-5, (seed, k)
        seq_acc, seq_loss = gpu_vmap.evaluate_one(model, d)
        assert acc[i] == pytest.approx(seq_acc, abs=1e-6) and loss[i] == pytest.approx(seq_loss, abs=1e-5)
    # each seed really is its own run: different inits and batch orders give different parameters
    assert not torch.allclose(pack.params_of(0)["head.weight"], pack.params_of(1)["head.weight"])


def test_a_failing_variant_is_reported_and_the_table_still_printed(gpu_vmap, tmp_path, monkeypatch, capsys):
    def broken(self, d, epochs, batch):
        raise RuntimeError("vmap: batching rule not implemented")

    monkeypatch.setattr(gpu_vmap.Pack, "train", broken)
    out = tmp_path / "v.json"
    assert gpu_vmap.main(["--device", "cpu", "--quick", "--out", str(out)]) == 1
    rows = json.loads(out.read_text())["rows"]
    assert rows[0]["variant"] == "sequential" and rows[0]["wall_s"] > 0
    assert rows[1] == {
        "variant": "vmap",
        "S": 2,
        "error": "RuntimeError: vmap: batching rule not implemented",
    }
    assert "elapsed" in capsys.readouterr().out
