"""benchmarks/packed_overhead.py: the packed trainer and the bare vmapped loop it is timed against train
the same pack on the same batches, so the ratio compares like with like."""

import pytest
import torch
from conftest import benchmark


@pytest.fixture(scope="module")
def overhead():
    return benchmark("packed_overhead")


def test_bare_and_packed_loops_compute_the_same_losses(overhead):
    device = torch.device("cpu")
    bare = overhead.bare(*overhead.setup(device, "mlp", 3, 256), 2, 32, device)
    packed = overhead.replikit_packed(*overhead.setup(device, "mlp", 3, 256), 2, 32, device)
    assert len(bare) == 3 and len(set(bare)) == 3  # three members, three different runs
    torch.testing.assert_close(torch.tensor(packed), torch.tensor(bare), rtol=1e-5, atol=1e-6)
    rates = overhead.replikit_packed(*overhead.setup(device, "mlp", 3, 256), 2, 32, device, rates=True)
    assert rates[0] == pytest.approx(bare[0], rel=1e-5) and rates[2] != pytest.approx(bare[2], rel=1e-3)


def test_the_benchmark_runs_and_prints_its_ratio(overhead, capsys):
    assert overhead.main(["--n", "256", "--epochs", "1", "--repeats", "1", "--width", "2"]) == 0
    assert "ratio packed / bare: median" in capsys.readouterr().out
