"""Critical periods: the share measure, the deficit schedule and the init on hand-made inputs; smoke runs."""

import itertools
import math

import pandas as pd
import pytest
import torch

from replikit.methods import critical_periods as cp
from replikit.methods import load_config


def test_share_on_hand_made_maps():
    m = torch.tensor([[1.0, 2.0], [0.0, -1.0]])
    assert cp.pathway_share(m, m).item() == pytest.approx(0.5)  # equal pathways: half each
    assert cp.pathway_share(m, torch.zeros(2, 2)).item() == pytest.approx(0.0)  # B carries nothing
    assert cp.pathway_share(torch.zeros(2, 2), m).item() == pytest.approx(1.0)
    assert cp.pathway_share(3 * m, m).item() == pytest.approx(0.25)  # <m, 4m> / |4m|^2
    # orthogonal parts: B's share is its fraction of the squared norm
    a, b = torch.tensor([[1.0, 0.0], [0.0, 0.0]]), torch.tensor([[0.0, 2.0], [0.0, 0.0]])
    assert cp.pathway_share(a, b).item() == pytest.approx(4 / 5)
    # batched over leading dims, A's and B's shares sum to 1
    w = torch.randn(5, 2, 3, 4)
    assert torch.allclose(
        cp.pathway_share(w[:, 0], w[:, 1]) + cp.pathway_share(w[:, 1], w[:, 0]), torch.ones(5)
    )


def test_gain_is_the_fraction_of_the_reference_carried():
    g = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    assert cp.pathway_gain(g, g).item() == pytest.approx(1.0)
    assert cp.pathway_gain(0.3 * g, g).item() == pytest.approx(0.3)
    assert cp.pathway_gain(torch.tensor([[0.0, 1.0], [1.0, 0.0]]), g).item() == pytest.approx(0.0)


def _cfg(**kw):
    base = {"steps": 20, "short_deficit": 2, "long_deficit": 5, "late_start": 10, "seed": 0}
    return cp.Config(**{**base, **kw})


def test_deficit_schedule_gate_and_zero():
    cfg = _cfg(deficit="gate")
    learn, output = cp.deficit_masks(cp.CONDITIONS, cfg)
    arm = {c: i for i, c in enumerate(cp.CONDITIONS)}
    assert learn.shape == output.shape == (len(cp.CONDITIONS), 2, 20)
    assert learn[arm["control"]].all() and output[arm["control"]].all()
    assert learn[:, 0].all()  # pathway A always learns
    assert learn[arm["early_short"], 1].tolist() == [0.0] * 2 + [1.0] * 18
    assert learn[arm["early_long"], 1].tolist() == [0.0] * 5 + [1.0] * 15
    assert learn[arm["late"], 1].tolist() == [1.0] * 10 + [0.0] * 5 + [1.0] * 5
    assert output[arm["late"]].all()  # a gated pathway still contributes
    assert not output[arm["solo_control"], 0].any() and output[arm["solo_control"], 1].all()
    assert learn[arm["solo_early_long"], 1].tolist() == learn[arm["early_long"], 1].tolist()
    learn_z, output_z = cp.deficit_masks(cp.CONDITIONS, _cfg(deficit="zero"))
    assert learn_z.all()  # removing the source removes the output, hence the gradient
    assert output_z[arm["early_long"], 1].tolist() == [0.0] * 5 + [1.0] * 15


def test_effective_maps_block_gradient_where_gated():
    w = torch.ones(1, 2, 2, 2, requires_grad=True)
    eff = cp.effective_maps(w, torch.tensor([[1.0, 0.0]]), torch.tensor([[1.0, 1.0]]))
    assert torch.equal(eff, w.detach())  # same values
    eff.sum().backward()
    assert w.grad[0, 0].eq(1).all() and w.grad[0, 1].eq(0).all()
    eff = cp.effective_maps(w.detach(), torch.tensor([[1.0, 1.0]]), torch.tensor([[1.0, 0.0]]))
    assert eff[0, 1].eq(0).all()


def test_mse_from_moments_matches_the_data_loss():
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(50, 6, generator=gen), torch.randn(50, 4, generator=gen)
    w = torch.randn(1, 2, 4, 3, generator=gen)
    direct = 0.5 * ((y - x[:, :3] @ w[0, 0].T - x[:, 3:] @ w[0, 1].T) ** 2).sum(1).mean()
    moments = cp.mse_from_moments(w, x.T @ x / 50, y.T @ x / 50, y.T @ y / 50)
    assert moments.item() == pytest.approx(direct.item(), rel=1e-5)


@pytest.mark.parametrize("depth,dims", [(1, (8, 8, 8)), (2, (8, 8, 8)), (4, (8, 15, 100)), (3, (15, 8, 20))])
def test_init_is_balanced_and_the_same_scale_at_every_depth(depth, dims):
    dim_in, dim_out, width = dims
    layers = cp.aligned_init(depth, dim_in, dim_out, width, 1e-3, torch.Generator().manual_seed(1))
    w = cp.end_to_end(layers)
    assert w.shape == (dim_out, dim_in)
    sv = torch.linalg.svdvals(w)
    rank = min(dim_in, dim_out)
    assert torch.allclose(sv[:rank], torch.full((rank,), 1e-3), rtol=1e-4)
    for lo, hi in itertools.pairwise(layers):  # balanced: W_{i+1}^T W_{i+1} = W_i W_i^T
        assert torch.allclose(hi.T @ hi, lo @ lo.T, atol=1e-6)


def test_both_pathways_start_identical_and_the_control_stays_symmetric():
    """The no-deficit control ends with equal shares: same init (scale and draw) for both pathways."""
    cfg = cp.Config(
        seed=0,
        depths=[3],
        steps=800,
        short_deficit=20,
        long_deficit=100,
        late_start=300,
        n_samples=4000,
        record_every=100,
    )
    out = cp.run_one(cfg.model_dump(), depth=3, rep=0)
    hist = pd.DataFrame(out["history"])
    first = hist[(hist["step"] == 0) & (hist["condition"] == "control")]["deprived_share"].item()
    assert first == pytest.approx(0.5, abs=1e-6)
    rows = {r["condition"]: r for r in out["rows"]}
    assert rows["control"]["deprived_share"] == pytest.approx(0.5, abs=0.03)
    assert rows["early_long"]["deprived_share"] < rows["control"]["deprived_share"]
    assert math.isnan(rows["solo_control"]["deprived_share"])
    assert rows["solo_control"]["deprived_gain"] == pytest.approx(1.0, abs=0.02)


def test_config_rejects_a_late_deficit_that_does_not_fit():
    with pytest.raises(ValueError, match="late_start"):
        _cfg(late_start=18)
    with pytest.raises(ValueError, match="short_deficit"):
        _cfg(short_deficit=6)
    with pytest.raises(ValueError, match="depths"):
        _cfg(depths=[0, 2])


def test_derived_statistics_on_a_hand_made_table():
    rows = []
    for seed in (0, 1):
        for depth, long_share in ((1, 0.5), (2, 0.4), (4, 0.1)):
            for cond, share, gain in (
                ("control", 0.5, 0.5),
                ("early_long", long_share, long_share),
                ("solo_control", math.nan, 1.0),
                ("solo_early_long", math.nan, 0.9),
            ):
                rows.append(
                    {
                        "arm": f"depth{depth}_{cond}",
                        "seed": seed,
                        "depth": depth,
                        "condition": cond,
                        "deprived_share": share,
                        "deprived_gain": gain,
                    }
                )
    runs = pd.DataFrame(rows)
    # harms 0, 0.1, 0.4 at depths 1, 2, 4: slope = sum((d - 7/3) h) / sum((d - 7/3)^2)
    x = torch.tensor([1.0, 2.0, 4.0]) - 7 / 3
    expected = (x @ torch.tensor([0.0, 0.1, 0.4]) / (x @ x)).item()
    assert cp.harm_slope(runs).tolist() == pytest.approx([expected] * 2)
    assert cp.competition_gap(runs).tolist() == pytest.approx([0.9 - 0.2] * 2)


def test_smoke_run_one_row_per_arm_and_seed():
    cfg = load_config("critical_periods", profile="smoke", overrides={"workers": 1, "seed": 0})
    out = cp.run(cfg)
    assert len(out.runs) == len(cfg.depths) * len(cp.CONDITIONS) * cfg.n_seeds
    assert not out.runs.duplicated(["arm", "seed"]).any()
    assert set(out.runs["seed"]) == set(range(cfg.n_seeds))
    assert out.runs["deprived_gain"].notna().all()


def test_full_profile_path_at_tiny_size():
    cfg = load_config(
        "critical_periods",
        profile="full",
        overrides={
            "workers": 1,
            "seed": 0,
            "n_seeds": 1,
            "depths": [1, 4],
            "steps": 60,
            "short_deficit": 5,
            "long_deficit": 10,
            "late_start": 20,
            "n_samples": 200,
            "record_every": 30,
        },
    )
    assert (cfg.dim_out, cfg.width) == (15, 100)
    out = cp.run(cfg)
    assert len(out.runs) == 2 * len(cp.CONDITIONS)


def test_claims_needing_absent_depths_are_skipped():
    from replikit import claims

    rows = [
        {
            "arm": f"depth1_{c}",
            "seed": s,
            "depth": 1,
            "condition": c,
            "deprived_share": 0.5,
            "deprived_gain": 0.5,
        }
        for s in (0, 1, 2)
        for c in cp.CONDITIONS
    ]
    verdicts = {r.claim.id: r for r in claims.judge_all(cp.CLAIMS, pd.DataFrame(rows))}
    for name in ("deep_early_harm", "harm_grows_with_depth", "late_no_harm", "competition"):
        assert verdicts[f"{cp.NAME}.{name}"].verdict == "skipped", name
    assert verdicts[f"{cp.NAME}.shallow_recovers"].verdict == "reproduced"  # identical shares, margin 0.05
