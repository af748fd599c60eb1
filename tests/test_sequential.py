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


def test_spending_is_pocock_shaped_not_linear():
    """alpha(t) = alpha * ln(1 + (e - 1) t): half the information spends ~62% of alpha, not half of it."""
    pocock = 0.05 * np.log(1 + (np.e - 1) * 0.5)
    assert sequential.spending(0.5) == pytest.approx(pocock)
    assert sequential.look_alphas([5, 10])[0] == pytest.approx(pocock)
    assert sequential.look_alphas([5, 10])[1] == pytest.approx(0.05 - pocock)


# Scripted per-seed effects of ``new`` over ``old`` (old is 0.5 on every metric of every seed).
EARLY = [0.20, 0.21, 0.22] * 3  # decided at look 1 whatever its alpha
LATE = [0.07, 0.10, 0.13] * 3  # reproduced at n=3 at alpha 0.05, but not at look 1's alpha: decided at look 2
WOBBLE = [0.0, 0.06, -0.06, 0.03, -0.03, 0.05, -0.05, 0.04, -0.01]  # undecided up to n_max
TRAINED: list[tuple[str, int]] = []


def scripted_run_one(arm: str, rep: int) -> dict:
    TRAINED.append((arm, rep))
    new = arm == "new"
    return {
        "arm": arm,
        "seed": rep,
        "early": 0.5 + (EARLY[rep] if new else 0.0),
        "late": 0.5 + (LATE[rep] if new else 0.0),
        "wobble": WOBBLE[rep] if new else 0.0,
    }


def scripted_run(cfg: FakeConfig) -> Outcome:
    """A method with scripted effects; each look's runtime is its seed count (to check they add up)."""
    tasks = [{"arm": a, "rep": r} for r in range(cfg.n_seeds) for a in ("new", "old")]
    rows = train.run_many(scripted_run_one, tasks, workers=1, device="cpu")
    return Outcome(runs=pd.DataFrame(rows), runtime_s=float(cfg.n_seeds))


def scripted(*claims: Claim) -> types.SimpleNamespace:
    return types.SimpleNamespace(NAME="scripted", run=scripted_run, CLAIMS=list(claims))


def paired(metric: str) -> Claim:
    return Claim(
        id=f"s.{metric}", paper="P", quote="q", metric=metric, treatment="new", baseline="old", delta=0.05
    )


WOBBLE_CLAIM = Claim(
    id="s.wobble",
    paper="P",
    quote="q",
    metric="wobble",
    treatment="new",
    statistic=lambda runs: runs[runs["arm"] == "new"].set_index("seed")["wobble"],
    arms=("new",),
    delta=0.05,
)
SCRIPTED_CFG = FakeConfig(n_seeds=3, n_max=9, seed_batch=3, workers=1, device="cpu", seed="pilot:3")


def test_each_look_judges_at_its_own_alpha(tmp_path, monkeypatch):
    """A claim decided at look k records (and was judged at) look_alphas(ns)[k - 1], not the nominal alpha."""
    monkeypatch.setattr(resume, "store_folder", lambda root, method, cfg: tmp_path / "store")
    alphas = sequential.look_alphas([3, 6, 9])
    _, results = sequential.replicate(scripted(paired("early"), paired("late"), WOBBLE_CLAIM), SCRIPTED_CFG)
    assert [r.looks for r in results] == [1, 2, 3]  # the test's premise: one claim stops at each look
    for r in results:  # paired (early, late) and derived (wobble) claims alike
        assert r.alpha == pytest.approx(alphas[r.looks - 1]), r.claim.id
    # judged at the nominal 0.05, the late claim would have stopped at look 1
    assert judge_effects(paired("late"), LATE[:3], alpha=0.05).verdict == "reproduced"
    assert judge_effects(paired("late"), LATE[:3], alpha=alphas[0]).verdict == "inconclusive"
    assert results[2].verdict == "inconclusive" and results[2].stop == "undecided at n_max"


def test_a_claim_decided_at_a_later_look_stops_there(tmp_path, monkeypatch):
    """Decided at look 2 of 3: frozen at n=6, no seed of look 3 trained, runtimes of both looks added."""
    monkeypatch.setattr(resume, "store_folder", lambda root, method, cfg: tmp_path / "store")
    TRAINED.clear()
    outcome, (early, late) = sequential.replicate(scripted(paired("early"), paired("late")), SCRIPTED_CFG)
    assert early.stop == "decided at look 1 of 3" and early.n_seeds == 3
    assert late.verdict == "reproduced" and (late.looks, late.n_seeds) == (2, 6)
    assert late.stop == "decided at look 2 of 3"
    assert max(rep for _, rep in TRAINED) == 5  # every claim decided: look 3's seeds never ran
    assert len(TRAINED) == 2 * 6  # and look 2 only trained seeds 3-5 (the store answered 0-2)
    assert outcome.runtime_s == pytest.approx(3.0 + 6.0)  # the looks' runtimes, summed
    assert early.seed_role == late.seed_role == SCRIPTED_CFG.seed.role == "pilot"
