"""benchmarks/op_count.py: the device operations a run issues, counted on the CPU, grouped by fit call."""

import pytest
from conftest import benchmark


@pytest.fixture(scope="module")
def op_count():
    return benchmark("op_count")


def test_a_packed_run_is_counted_by_group_with_one_fused_update_a_step(op_count):
    r = op_count.count("elr", "smoke", {"pack": 4, "n_seeds": 1, "epochs": 2})
    ops = dict(r["top"])
    steps = sum(g["steps"] for g in r["groups"].values())
    assert list(r["groups"]) == ["pack of #"] and steps > 0
    assert ops["_fused_adam_"] == steps  # the optimiser as CUDA builds it: one fused update a step
    assert r["ops"] == sum(ops.values()) == r["outside_fits"] + sum(g["ops"] for g in r["groups"].values())
    assert not set(ops) & op_count.NOT_COUNTED  # views, host reads and markers launch no kernel
    text = op_count.report(r, top=3)
    assert "| pack of # |" in text and text.count("\n| ") == 1 + 3 + 2  # one group, three ops, two heads


def test_plain_fit_calls_are_grouped_by_desc_without_numbers(op_count):
    r = op_count.count("downstream_scaling", "smoke", {"n_seeds": 1, "pack": 0})
    assert "aligned pretrain # seed #" in r["groups"] and "misaligned finetune # seed #" in r["groups"]
    assert all(g["steps"] > 0 and g["ops"] > 0 for g in r["groups"].values())


def test_cuda_width_is_what_pack_auto_gives_on_cuda(op_count):
    assert op_count.cuda_width("elr") == 16 and op_count.cuda_width("downstream_scaling") == 8
    assert op_count.cuda_width("grokking") == 0  # no pack knob


def test_helper_groups_count_host_reads_and_keep_host_work_out_of_the_device_total(op_count):
    small = {"n_seeds": 1, "pack": 0, "pretext_epochs": 1, "ft_steps": 5, "probe_iters": 10}
    r = op_count.count("rotnet", "smoke", small)
    lin, nonlin = r["groups"]["linear probes (L-BFGS)"], r["groups"]["non-linear probes"]
    assert lin["on_host_on_cuda"] and not nonlin["on_host_on_cuda"]
    assert lin["host_reads"] > lin["ops"] / 20 > 0  # L-BFGS reads a host scalar every few operations
    assert (
        r["device_ops"] == r["ops"] - lin["ops"]
        and r["device_host_reads"] == r["host_reads"] - lin["host_reads"]
    )
    assert "(on the host in a CUDA run)" in op_count.report(r, top=3)
    on_device = op_count.count("rotnet", "smoke", {**small, "linear_probe_device": "run"})
    assert on_device["ops"] == r["ops"] and on_device["device_ops"] == r["ops"]
