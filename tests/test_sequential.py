"""Sequential seeds: the looks, the alpha they spend, stopping per claim, runs never redone."""

import types

import numpy as np
import pandas as pd
import pytest

from replikit import resume, sequential, train
from replikit.claims import Claim, judge_effects
from replikit.config import MethodConfig, derive_seed
from replikit.results import Outcome


def test_looks_and_their_alphas():
    assert sequential.looks(5, 0, 2) == [5]
    assert sequential.looks(3, 8, 2) == [3, 5, 7, 8]
    alphas = sequential.look_alphas([3, 5, 7, 8])
    assert sum(alphas) == pytest.approx(0.05) and all(a > 0 for a in alphas)
    assert sequential.look_alphas([5]) == [pytest.approx(0.05)]
    assert sequential.spending(0.0) == 0.0 and sequential.spending(1.0) == pytest.approx(0.05)


def test_error_spending_keeps_false_reproductions_below_alpha_over_looks():
    """Under a true effect of 0, 'reproduced' at any of the looks stays below alpha / 2 (Monte Carlo)."""
    claim = Claim(id="m.c", paper="P", quote="q", metric="x", treatment="a", baseline="b", delta=0.1)
    ns = sequential.looks(3, 12, 3)
    alphas = sequential.look_alphas(ns)
    rng = np.random.default_rng(0)
    false_hits = 0
    for _ in range(2000):
        effects = rng.normal(0.0, 1.0, size=ns[-1])
        for n, a in zip(ns, alphas):
            r = judge_effects(claim, effects[:n], alpha=a)
            if r.decided:
                false_hits += r.verdict == "reproduced"
                break
    assert false_hits / 2000 < 0.025


class FakeConfig(MethodConfig):
    gain: float = 0.0


CALLS: list[int] = []


def fake_run_one(cfg: dict, arm: str, rep: int) -> dict:
    cfg = FakeConfig(**cfg)
    rng = np.random.default_rng(derive_seed(cfg.seed, "fake", "noise", rep))
    noise = rng.normal(0, 0.01)
    return {
        "arm": arm,
        "seed": rep,
        "big": 0.5 + noise + (0.2 if arm in ("new", "side") else 0.0),
        "tiny": 0.5 + (noise if arm == "new" else rng.normal(0, 0.05)) + (cfg.gain if arm == "new" else 0.0),
    }


def fake_run(cfg: FakeConfig) -> Outcome:
    tasks = [
        {"cfg": cfg.model_dump(), "arm": a, "rep": r} for r in range(cfg.n_seeds) for a in ("new", "old")
    ]
    rows = train.run_many(fake_run_one, tasks, workers=1, device="cpu")
    CALLS.append(len(tasks))
    return Outcome(runs=pd.DataFrame(rows))


FAKE = types.SimpleNamespace(
    NAME="fake_sequential",
    run=fake_run,
    CLAIMS=[
        Claim(
            id="fake.big",
            paper="P",
            quote="q",
            metric="big",
            treatment="new",
            baseline="old",
            delta=0.05,
            delta_reason="test",
        ),
        Claim(
            id="fake.tiny",
            paper="P",
            quote="q",
            metric="tiny",
            treatment="new",
            baseline="old",
            delta=0.05,
            delta_reason="test",
        ),
        Claim(
            id="fake.absent",
            paper="P",
            quote="q",
            metric="big",
            treatment="gone",
            baseline="old",
            delta=0.05,
            delta_reason="test",
        ),
    ],
)


def test_replicate_stops_each_claim_when_decided_and_never_redoes_a_run(tmp_path, monkeypatch):
    monkeypatch.setattr(resume, "store_folder", lambda root, method, cfg: tmp_path / "store")
    CALLS.clear()
    cfg = FakeConfig(n_seeds=3, n_max=9, seed_batch=3, workers=1, device="cpu", gain=0.03)
    outcome, results = sequential.replicate(FAKE, cfg)
    big, tiny, absent = results
    assert big.verdict == "reproduced" and big.n_seeds == 3 and big.stop == "decided at look 1 of 3"
    assert tiny.looks > 1 and tiny.n_seeds == 3 * tiny.looks  # kept adding seeds while undecided
    assert absent.verdict == "skipped" and "gone" in absent.reason
    assert outcome.runs["seed"].nunique() == tiny.n_seeds
    assert len(list((tmp_path / "store").glob("*.pkl"))) == 2 * tiny.n_seeds  # each run recorded once
    # the looks re-requested earlier seeds, but the store answered them: rerun everything, no new records
    n_before = len(list((tmp_path / "store").glob("*.pkl")))
    again, results_again = sequential.replicate(FAKE, cfg)
    assert len(list((tmp_path / "store").glob("*.pkl"))) == n_before
    assert [r.verdict for r in results_again] == [r.verdict for r in results]
    pd.testing.assert_frame_equal(again.runs, outcome.runs)


def test_one_look_without_n_max(tmp_path, monkeypatch):
    monkeypatch.setattr(resume, "store_folder", lambda root, method, cfg: tmp_path / "store")
    cfg = FakeConfig(n_seeds=4, workers=1, device="cpu")
    _, results = sequential.replicate(FAKE, cfg)
    assert all(r.looks == 1 for r in results) and results[1].alpha == pytest.approx(0.05)
    assert results[1].stop in ("decided at look 1 of 1", "undecided (one look)")


def select_run(cfg: FakeConfig, select=sequential.every) -> Outcome:
    """A method whose run takes ``select``: a third arm, ``side``, read only by a claim decided at once."""
    tasks = [
        {"cfg": cfg.model_dump(), "arm": a, "rep": r}
        for r in range(cfg.n_seeds)
        for a in ("new", "old", "side")
        if select(a, r)
    ]
    return Outcome(runs=pd.DataFrame(train.run_many(fake_run_one, tasks, workers=1, device="cpu")))


SIDE = Claim(
    id="fake.side",
    paper="P",
    quote="q",
    metric="big",
    treatment="side",
    baseline="old",
    delta=0.05,
    delta_reason="t",
)
DERIVED = Claim(
    id="fake.derived",
    paper="P",
    quote="q",
    metric="tiny",
    treatment="new",
    statistic=lambda runs: runs[runs["arm"] == "new"].set_index("seed")["tiny"] - 0.5,
    arms=("ne*",),
    delta=0.05,
    delta_reason="t",
)


def test_later_looks_train_only_the_arms_undecided_claims_read(tmp_path, monkeypatch):
    monkeypatch.setattr(resume, "store_folder", lambda root, method, cfg: tmp_path / method)
    cfg = FakeConfig(n_seeds=3, n_max=9, seed_batch=3, workers=1, device="cpu", gain=0.03)
    claims = [*FAKE.CLAIMS[:2], SIDE, DERIVED]
    selecting = types.SimpleNamespace(NAME="selecting", run=select_run, CLAIMS=claims)
    everything = types.SimpleNamespace(NAME="everything", run=lambda cfg: select_run(cfg), CLAIMS=claims)
    assert sequential.takes_select(selecting) and not sequential.takes_select(everything)
    out_sel, res_sel = sequential.replicate(selecting, cfg)
    out_all, res_all = sequential.replicate(everything, cfg)
    big, tiny, side, _ = res_sel
    assert big.looks == side.looks == 1 and tiny.looks > 1  # the test's premise
    runs = out_sel.runs
    assert set(runs.loc[runs["seed"] < 3, "arm"]) == {"new", "old", "side"}  # the first look: every arm
    assert set(runs.loc[runs["seed"] >= 3, "arm"]) == {"new", "old"}  # later: what tiny and derived read
    assert len(list((tmp_path / "selecting").glob("*.pkl"))) < len(
        list((tmp_path / "everything").glob("*.pkl"))
    )
    for a, b in zip(res_sel, res_all):  # the same verdicts, to the last digit
        assert (a.verdict, a.n_seeds, a.looks, a.effect, a.ci_low) == (
            b.verdict,
            b.n_seeds,
            b.looks,
            b.effect,
            b.ci_low,
        )


def test_selection_patterns():
    sel = sequential.Selection()
    sel.add(0, ("*",))
    sel.add(4, ("a/*", "b"))
    assert sel("zzz", 3) and sel("a/x", 5) and sel("b", 9) and not sel("bb", 4) and not sel("c", 7)
    assert sequential.arms_needed([SIDE, DERIVED, FAKE.CLAIMS[0]]) == ("ne*", "new", "old", "side")
    no_arms = Claim(id="x", paper="P", quote="q", metric="m", treatment="t", statistic=len, delta=1.0)
    assert no_arms.arm_patterns == ("*",)
