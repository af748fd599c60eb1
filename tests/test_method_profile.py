"""benchmarks/method_profile.py: where one seed of a method spends its time, by fit call and function."""

from conftest import benchmark

from replikit import packed, train
from replikit.methods import load_config, rotnet

method_profile = benchmark("method_profile")


def test_profile_splits_a_seed_into_its_fits_probes_and_the_rest(tmp_path):
    fit, pack, probe = train.fit, packed.fit, rotnet.fit_probe
    result = method_profile.profile("rotnet", "cpu", "smoke", 1, ["fit_probe"])
    assert (train.fit, packed.fit, rotnet.fit_probe) == (fit, pack, probe), "the wrappers are removed"
    rows = {r["group"]: r for r in result["rows"]}
    cfg = load_config("rotnet", profile="smoke")
    # one pretext fit (its seed number folded into #), a fine-tune per arm and label count
    assert rows["fit: pretext seed #"]["calls"] == 1
    assert rows["fit: fine-tune"]["calls"] == 2 * len(cfg.shots)
    assert rows["fit_probe()"]["calls"] > 0
    fits = sum(r["seconds"] for g, r in rows.items() if g.startswith("fit:"))
    other = rows["other (outside any fit call)"]["seconds"]
    assert other >= 0 and abs(fits + other - result["total_s"]) < 0.01
    assert "| fit: fine-tune |" in method_profile.table(result)


def test_profile_refuses_a_function_the_method_lacks():
    import pytest

    with pytest.raises(SystemExit, match="no function nope"):
        method_profile.profile("rotnet", "cpu", "smoke", 1, ["nope"])
