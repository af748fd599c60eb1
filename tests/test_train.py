"""The shared trainer: it learns, it is deterministic, it fails loudly, it spreads seeds over processes."""

import copy

import pytest
import torch

from replikit import train


def toy(seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(512, 5, generator=g)
    y = (x[:, 0] + x[:, 1] > 0).long()
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(5, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
    return x, y, model


def fit_toy(seed=0, **kwargs):
    x, y, model = toy(seed)
    step = lambda idx, p: torch.nn.functional.cross_entropy(model(x[idx]), y[idx])  # noqa: E731
    history = train.fit(
        step,
        model.parameters(),
        len(x),
        epochs=kwargs.pop("epochs", 8),
        batch_size=64,
        seed=seed,
        device=torch.device("cpu"),
        lr=1e-2,
        evaluate=lambda: {"acc": train.accuracy(model, x, y)},
        models=[model],
        **kwargs,
    )
    return history, model


def test_fit_learns_and_records_history():
    history, _ = fit_toy()
    assert [h["epoch"] for h in history] == list(range(1, 9))
    assert history[-1]["train_loss"] < 0.5 * history[0]["train_loss"]
    assert history[-1]["acc"] > 0.9


def test_fit_is_deterministic_for_a_seed():
    (_, a), (_, b) = fit_toy(seed=1), fit_toy(seed=1)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


def test_lr_schedule_follows_progress():
    history, _ = fit_toy(epochs=2, lr_schedule=lambda p: 1.0 - p)
    steps = 2 * (512 // 64)
    assert history[-1]["lr"] == pytest.approx(1e-2 * (1.0 - (steps - 1) / steps))


def test_divergence_fails_loudly_naming_the_epoch():
    x, y, model = toy()
    calls = {"n": 0}

    def step(idx, p):
        calls["n"] += 1
        loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
        return loss * float("nan") if calls["n"] > 10 else loss

    with pytest.raises(train.DivergenceError, match=r"loss is nan in epoch 2/5"):
        train.fit(
            step, model.parameters(), len(x), epochs=5, batch_size=64, seed=0, device=torch.device("cpu")
        )


def test_step_logs_are_averaged_into_history():
    x, y, model = toy()

    def step(idx, p):
        return torch.nn.functional.cross_entropy(model(x[idx]), y[idx]), {"const": torch.tensor(2.0)}

    history = train.fit(
        step, model.parameters(), len(x), epochs=1, batch_size=64, seed=0, device=torch.device("cpu")
    )
    assert history[0]["const"] == pytest.approx(2.0)


def square(v: int) -> dict:
    torch.manual_seed(v)
    return {"v": v, "draw": torch.rand(1).item(), "threads": torch.get_num_threads()}


def test_run_many_keeps_order_and_matches_in_process_results():
    tasks = [{"v": v} for v in range(4)]
    here = train.run_many(square, tasks, workers=1)
    spread = train.run_many(square, tasks, workers=2)
    assert [r["v"] for r in spread] == [0, 1, 2, 3]
    assert [r["draw"] for r in spread] == [r["draw"] for r in here]
    assert all(r["threads"] == 1 for r in spread + here)  # one torch thread per run, whatever the layout


def worker_pid(v: int, die: bool = False) -> int:
    import os

    if die:
        os._exit(3)  # a worker killed mid-run (out of memory, SIGKILL)
    return os.getpid()


def test_run_many_keeps_its_workers_between_calls_and_rebuilds_them_when_needed(monkeypatch):
    from concurrent.futures.process import BrokenProcessPool

    tasks = [{"v": v} for v in range(4)]
    first = set(train.run_many(worker_pid, tasks, workers=2))
    pool = train._POOL
    # every worker the pool spawned, whether or not it ran a task (one may still be importing torch while
    # the other runs all four quick tasks)
    spawned = set(pool._processes)
    assert first <= spawned and len(spawned) == 2
    again = set(train.run_many(worker_pid, tasks, workers=2))
    assert train._POOL is pool and again <= spawned  # warm workers, no new spawn
    monkeypatch.setenv("REPLIKIT_TEST_POOL", "1")  # spawned workers would not see it: new pool
    after_env = set(train.run_many(worker_pid, tasks, workers=2))
    assert not after_env & spawned
    with pytest.raises(BrokenProcessPool):
        train.run_many(worker_pid, [{"v": 0, "die": True}, {"v": 1}], workers=2)
    recovered = set(train.run_many(worker_pid, tasks, workers=2))  # a dead worker's pool is not reused
    assert len(recovered) >= 1 and not recovered & after_env
    train.shutdown_pool()


def test_device_resolution():
    assert train.resolve_device("cpu").type == "cpu"
    if not torch.cuda.is_available():
        assert train.resolve_device("auto").type == "cpu"
        with pytest.raises(RuntimeError, match="CUDA is not available"):
            train.resolve_device("cuda")


def test_max_grad_norm_clips_the_update():
    w = torch.nn.Parameter(torch.ones(4))
    before = w.detach().clone()

    def step(idx, p):
        return 1000.0 * (w * w).sum()  # gradient 2000 per coordinate: norm 4000

    train.fit(
        step,
        [w],
        8,
        epochs=1,
        batch_size=8,
        seed=0,
        device=torch.device("cpu"),
        lr=1.0,
        optimizer="sgd",
        max_grad_norm=0.5,
    )
    assert torch.linalg.vector_norm(w.detach() - before).item() == pytest.approx(0.5, rel=1e-5)


def bn_toy():
    x, y, _ = toy()
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.BatchNorm1d(8), torch.nn.Linear(8, 2))
    step = lambda idx, p: torch.nn.functional.cross_entropy(model(x[idx]), y[idx])  # noqa: E731
    return x, model, step


def test_fit_evaluates_in_eval_mode_and_leaves_its_models_there():
    """``evaluate`` sees its models in eval mode (batch norm by its running statistics, not the batch's),
    and ``fit`` returns them in eval mode, with or without an ``evaluate``."""
    x, model, step = bn_toy()
    seen = []

    def evaluate():
        seen.append((model.training, model(x)))
        return {}

    kw = dict(epochs=2, batch_size=64, seed=0, device=torch.device("cpu"), models=[model])
    train.fit(step, model.parameters(), len(x), evaluate=evaluate, **kw)
    assert [training for training, _ in seen] == [False, False]
    assert not model.training
    with torch.no_grad():
        assert torch.equal(seen[-1][1], model(x))  # the trained model, by its running statistics
        assert not torch.allclose(seen[-1][1], model.train()(x))  # not by the batch's
    train.fit(step, model.parameters(), len(x), **kw)  # no evaluate: switched back all the same
    assert not model.training


def test_predict_runs_in_eval_mode_and_restores_the_mode_it_found():
    x, model, _ = bn_toy()
    model.train()
    before = model[1].running_mean.clone()
    with torch.no_grad():
        expected = copy.deepcopy(model).eval()(x)
    assert torch.equal(train.predict(model, x, batch_size=100), expected)  # batches of 100: eval mode
    assert model.training and torch.equal(model[1].running_mean, before)  # still training, stats untouched
    model.eval()
    train.predict(model, x)
    assert not model.training
