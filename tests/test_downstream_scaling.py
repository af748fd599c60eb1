"""Downstream scaling: chains, exact scores, the log law and its fit, the claims; the method's config."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from replikit import config
from replikit.methods import downstream_scaling as ds
from replikit.methods import load_config


def test_chain_rows_are_distributions_on_their_support():
    table = ds.make_chain(vocab=6, order=2, support=3, concentration=1.0, rng=np.random.default_rng(0))
    assert table.shape == (36, 6)
    assert np.allclose(table.sum(1), 1.0)
    assert ((table > 0).sum(1) == 3).all()


def test_misalign_keeps_support_and_moves_argmax():
    table = np.array([[0.7, 0.2, 0.0, 0.1], [0.0, 0.0, 0.6, 0.4]])
    out = ds.misalign(table)
    # support [0, 1, 3] holds [0.7, 0.2, 0.1] -> rolled by one: [0.1, 0.7, 0.2]
    assert np.allclose(out, [[0.1, 0.7, 0.0, 0.2], [0.0, 0.0, 0.4, 0.6]])
    assert ((out > 0) == (table > 0)).all()
    assert (out.argmax(1) != table.argmax(1)).all()
    assert np.allclose(ds.mixture(table, out, 0.25), 0.25 * table + 0.75 * out)


def test_context_index_and_windows():
    assert ds.context_index(np.array([[1, 2], [3, 0]]), vocab=4).tolist() == [6, 12]
    ctx, nxt = ds.windows(np.array([[1, 2, 3, 4], [5, 6, 7, 8]]), context=2)
    assert ctx.tolist() == [[1, 2], [2, 3], [5, 6], [6, 7]]
    assert nxt.tolist() == [3, 4, 7, 8]


def test_sampled_docs_follow_the_chain():
    # deterministic chain on 3 tokens: 0 -> 1 -> 2 -> 0
    table = np.array([[0, 1.0, 0], [0, 0, 1.0], [1.0, 0, 0]])
    docs = ds.sample_docs(table, vocab=3, order=1, n_docs=4, doc_len=7, rng=np.random.default_rng(1))
    assert ((docs[:, 1:] - docs[:, :-1]) % 3 == 1).all()


def test_stationary_distribution_by_hand():
    # order-1 two-state chain with P(0->1) = 0.2, P(1->0) = 0.4: pi = (2/3, 1/3)
    table = np.array([[0.8, 0.2], [0.4, 0.6]])
    assert np.allclose(ds.stationary_contexts(table, vocab=2, order=1), [2 / 3, 1 / 3], atol=1e-9)


def test_expected_scores_by_hand():
    target = torch.tensor([[0.5, 0.5], [0.9, 0.1]])
    q = torch.tensor([[0.25, 0.75], [0.5, 0.5]])
    w = torch.tensor([0.4, 0.6])
    out = ds.expected_scores(q.log(), target, w)
    ce = 0.4 * -(0.5 * math.log(0.25) + 0.5 * math.log(0.75)) + 0.6 * -(
        0.9 * math.log(0.5) + 0.1 * math.log(0.5)
    )
    assert out["ce"] == pytest.approx(ce, rel=1e-6)
    # context 0: argmax q = 1, P = 0.5; context 1: tie -> argmax 0, P = 0.9
    assert out["acc"] == pytest.approx(0.4 * 0.5 + 0.6 * 0.9, rel=1e-6)


def test_log_law_value_and_fit_recovers_parameters():
    d = np.array([2.0**k for k in range(8, 16)])
    assert ds.log_law(np.array([math.e**2]), 1.0, 0.5, 2.0)[0] == pytest.approx((1.0 + 0.5 * 2) ** 2)
    true = (0.3, 0.05, 0.8)
    f = ds.log_law(d, *true)
    params = ds.fit_log_law(d[:5], f[:5])
    assert np.allclose(ds.log_law(d, *params), f, atol=1e-4)  # extrapolates the exact law


def test_monotonicity_and_pretrain_epochs():
    sizes = np.arange(1, 6)
    assert ds.monotonicity(sizes, np.array([1, 2, 3, 4, 5.0])) == pytest.approx(1.0)
    assert ds.monotonicity(sizes, np.array([5, 4, 3, 2, 1.0])) == pytest.approx(-1.0)
    assert ds.monotonicity(sizes, np.array([1, 1, 1, 1, 1.0])) == 0.0
    assert ds.pretrain_epochs(n=1024, epochs=2, min_steps=40, batch_size=256) == 10  # 4 steps per epoch
    assert ds.pretrain_epochs(n=65536, epochs=2, min_steps=40, batch_size=256) == 2


def test_summary_and_claims_on_a_made_up_curve():
    cfg = ds.Config(profile="smoke", pretrain_tokens=[64, 128, 256, 512, 1024, 2048], n_fit=4)
    sizes = np.array(cfg.pretrain_tokens, dtype=float)
    rows = [{"arm": "aligned", "seed": 0, "pretrain_tokens": 0, "acc": 0.1, "ce": 3.0}]
    acc = ds.log_law(sizes, 0.2, 0.1, 0.7)
    rows += [
        {"arm": "aligned", "seed": 0, "pretrain_tokens": int(s), "acc": a, "ce": 3.0 - i * 0.1}
        for i, (s, a) in enumerate(zip(sizes, acc))
    ]
    out = ds.summarize(cfg, pd.DataFrame(rows))["summary"]
    assert out["ce_monotonicity"] == pytest.approx(1.0) and out["metric_monotonicity"] == pytest.approx(1.0)
    assert out["law_error"] < 1e-4
    assert out["metric_gain_late"] == pytest.approx(acc[-1] - acc[2])
    # an exact log law: the law beats both naive forecasters
    assert out["law_gain_over_naive"] == pytest.approx(out["naive_error"] - out["law_error"])
    assert out["law_gain_over_naive"] > 0
    assert out["metric_non_monotonicity"] == pytest.approx(0.0)


def test_naive_predictions_by_hand():
    d = np.array([1.0, 2.0, 3.0, 4.0, 10.0])
    f = np.array([0.1, 0.3, 0.5, 0.6, 0.9])
    out = ds.naive_predictions(d, f, n_fit=3)
    np.testing.assert_allclose(out["persistence"], [0.5, 0.5])  # the last fitted value, held
    np.testing.assert_allclose(out["linear"], [0.7, 1.9])  # the line 0.2 d - 0.1 through the first 3 points


def _stat_runs(mono, law_err, naive_err):
    rows = []
    for seed, (m, le, ne) in enumerate(zip(mono, law_err, naive_err)):
        rows.append(
            {"arm": "aligned", "seed": seed, "metric_monotonicity": 1.0, "law_error": le, "naive_error": ne}
        )
        rows.append(
            {
                "arm": "misaligned",
                "seed": seed,
                "metric_monotonicity": m,
                "law_error": 0.0,
                "naive_error": 0.0,
            }
        )
    return pd.DataFrame(rows[::-1])  # reversed: the statistics must index by seed, not by row order


def test_misaligned_non_monotonicity_is_one_minus_spearman_of_the_misaligned_arm():
    stat = ds.misaligned_non_monotonicity(_stat_runs([1.0, 0.2, -0.5], [0, 0, 0], [0, 0, 0]))
    assert stat.index.tolist() == [0, 1, 2]
    np.testing.assert_allclose(stat.to_numpy(), [0.0, 0.8, 1.5])
    # by hand on curves: monotone -> 0; flat-then-worse -> > 1; fluctuating -> about 1
    sizes = np.arange(8)
    assert 1.0 - ds.monotonicity(sizes, np.arange(8.0)) == pytest.approx(0.0)
    assert 1.0 - ds.monotonicity(sizes, -np.arange(8.0)) == pytest.approx(2.0)
    assert 1.0 - ds.monotonicity(sizes, np.array([0, 1, 0, 1, 0, 1, 0, 1.0])) == pytest.approx(1.0, abs=0.25)


def test_law_gain_over_naive_is_naive_minus_law_error_of_the_aligned_arm():
    stat = ds.law_gain_over_naive(_stat_runs([1, 1], [0.01, 0.03], [0.02, 0.02]))
    np.testing.assert_allclose(stat.to_numpy(), [0.01, -0.01])
    assert stat.index.tolist() == [0, 1]


def test_claims_declare_deltas_and_the_derived_claims_their_statistics():
    assert all(c.delta > 0 and c.delta_reason for c in ds.CLAIMS)
    by_id = {c.id.split(".")[1]: c for c in ds.CLAIMS}
    assert by_id["misaligned_metric_not_monotone"].statistic is ds.misaligned_non_monotonicity
    assert by_id["aligned_log_law_beats_naive"].statistic is ds.law_gain_over_naive
    assert (
        "misaligned_metric_stalls" not in by_id
    )  # the comparative reading is gone: tested as the paper states it


def test_models_shapes():
    x = torch.randint(0, 7, (5, 3))
    cfg = ds.Config(profile="smoke", vocab=7, order=2, support=3, context=3, hidden=32, embed=4)
    assert ds.build_model(cfg, 7)(x).shape == (5, 7)
    tcfg = ds.Config(
        profile="smoke", vocab=7, order=2, support=3, context=3, model="transformer", hidden=32, layers=1
    )
    assert ds.build_model(tcfg, 7)(x).shape == (5, 7)


def test_text_corpus_task(tmp_path):
    text = b"the cat sat on the mat. " * 200
    for name in ("down", "al", "mis"):
        (tmp_path / f"{name}.txt").write_bytes(text)
    cfg = ds.Config(
        profile="smoke",
        corpus="text",
        context=4,
        doc_len=16,
        finetune_tokens=256,
        eval_tokens=1000,
        pretrain_tokens=[64, 128, 256, 512, 1024],
        n_fit=3,
        text_downstream=str(tmp_path / "down.txt"),
        text_aligned=str(tmp_path / "al.txt"),
        text_misaligned=str(tmp_path / "mis.txt"),
    )
    task = ds.Task(cfg, "aligned", 0)
    assert task.vocab == 256 and task.pre_docs.shape[1] == 16
    assert np.isclose(task.eval_weight.sum(), 1.0) and task.eval_ctx.shape[1] == 4
    with pytest.raises(FileNotFoundError):
        ds.Task(cfg.model_copy(update={"text_downstream": str(tmp_path / "none.txt")}), "aligned", 0)


def test_config_profiles_validate_and_reject_bad_values():
    for profile in ("smoke", "default", "full"):
        load_config("downstream_scaling", profile=profile)
    with pytest.raises(config.ConfigError, match="unknown key"):
        load_config("downstream_scaling", profile="smoke", overrides={"alpha": 1})
    with pytest.raises(config.ConfigError, match="powers of two"):
        load_config(
            "downstream_scaling", profile="smoke", overrides={"pretrain_tokens": [64, 96, 128, 160, 192]}
        )
    with pytest.raises(config.ConfigError, match="n_fit"):
        load_config("downstream_scaling", profile="smoke", overrides={"n_fit": 5})
    with pytest.raises(config.ConfigError, match="misaligned_alignment"):
        load_config("downstream_scaling", profile="smoke", overrides={"misaligned_alignment": 1.5})
    with pytest.raises(config.ConfigError):
        load_config("downstream_scaling", profile="smoke", overrides={"support": 40})


def test_packed_runs_train_like_their_runs_one_by_one():
    """pack > 0: each size's pretraining of every (arm, seed) as one pack, then their fine-tunes with early
    stopping on each member's own held-out documents: run_one's curves to float tolerance, the same
    fine-tuning epochs; what else shares a pack changes nothing."""
    cfg = load_config(
        "downstream_scaling", profile="smoke", overrides={"workers": 1, "device": "cpu", "ft_epochs": 4}
    )
    plain = ds.run(cfg.model_copy(update={"pack": 0}))
    packed = ds.run(cfg.model_copy(update={"pack": 4}))
    assert plain.runs[["arm", "seed"]].equals(packed.runs[["arm", "seed"]])
    assert list(plain.history.columns) == list(packed.history.columns)
    # early stopping chose inside the run somewhere (not always the last epoch), and the same epochs packed
    assert plain.history["ft_epoch"].nunique() > 1
    assert plain.history["ft_epoch"].tolist() == packed.history["ft_epoch"].tolist()
    cols = ["acc", "ce", "pre_acc", "pre_ce"]
    np.testing.assert_allclose(packed.history[cols], plain.history[cols], atol=1e-4)
    # pretraining did something: the largest size beats fine-tuning from scratch in every run
    assert (plain.runs["acc_max_size"] > plain.runs["acc_scratch"]).all()
    args = cfg.model_copy(update={"pack": 4}).model_dump()
    alone = ds.run_pack(args, [("misaligned", 1)])[0]
    crowd = ds.run_pack(args, [("aligned", 0), ("misaligned", 1)])[1]
    assert alone["summary"] == crowd["summary"]
    pd.testing.assert_frame_equal(alone["curve"], crowd["curve"], check_exact=True)


def test_pack_auto_packs_the_mlp_on_cuda_and_refuses_the_transformer():
    assert ds.Config(device="cpu").pack == 0
    assert ds.Config(device="cuda").pack == 8
    assert ds.Config(device="cuda", model="transformer", corpus="text").pack == 0
    with pytest.raises(ValueError, match="transformer does not pack"):
        ds.Config(model="transformer", pack=4)
