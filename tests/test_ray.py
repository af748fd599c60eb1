"""The Ray backend of run_many, on a local two-CPU Ray instance: the same results as the process pool."""

from __future__ import annotations

import pandas as pd
import pytest

from replikit import train
from replikit.methods import elr, load_config

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install -e '.[ray]')")


@pytest.mark.slow
def test_ray_backend_matches_the_local_pool(monkeypatch):
    cfg = load_config("elr", profile="smoke", overrides={"epochs": 2, "train_subset": 500, "sweep_seeds": 0})
    tasks = [
        {"cfg": cfg.model_dump(), "arm": a, "rep": 0, "noise_rate": cfg.noise_rate} for a in ("ce", "elr")
    ]
    local = train.run_many(elr.run_one, tasks, workers=2, device="cpu")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        monkeypatch.setenv(train.RAY_ENV, "local")
        remote = train.run_many(elr.run_one, tasks, workers=2, device="cpu")
    finally:
        ray.shutdown()
    for a, b in zip(local, remote):
        pd.testing.assert_frame_equal(
            pd.DataFrame(a["history"]), pd.DataFrame(b["history"]), check_exact=True
        )
        assert a["final_test_acc"] == b["final_test_acc"]
