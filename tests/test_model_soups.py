"""Model soups: the averaging and the greedy recipe on hand-made state dicts; the method's config."""

from __future__ import annotations

import pytest
import torch

from replikit import config
from replikit.methods import load_config, model_soups


def sd(w: float, b: float, steps: int = 0) -> dict[str, torch.Tensor]:
    return {"w": torch.full((2, 2), w), "b": torch.tensor([b, -b]), "n": torch.tensor(steps)}


def test_uniform_soup_is_elementwise_mean():
    out = model_soups.uniform_soup([sd(1.0, 0.0, 5), sd(2.0, 3.0, 7), sd(6.0, 6.0, 9)])
    assert torch.allclose(out["w"], torch.full((2, 2), 3.0))
    assert torch.allclose(out["b"], torch.tensor([3.0, -3.0]))
    assert out["n"].item() == 5  # integer buffers: taken from the first ingredient, not averaged
    assert out["w"].dtype == torch.float32


def test_weighted_average_by_hand():
    out = model_soups.average([sd(0.0, 1.0), sd(4.0, 5.0)], weights=[3.0, 1.0])
    assert torch.allclose(out["w"], torch.full((2, 2), 1.0))  # (3*0 + 1*4) / 4
    assert torch.allclose(out["b"], torch.tensor([2.0, -2.0]))  # (3*1 + 1*5) / 4


def test_average_rejects_mismatched_state_dicts():
    with pytest.raises(ValueError, match="keys"):
        model_soups.average([sd(1, 1), {"w": torch.zeros(2, 2)}])
    with pytest.raises(ValueError, match="shape"):
        model_soups.average([sd(1, 1), {"w": torch.zeros(3), "b": torch.zeros(2), "n": torch.tensor(0)}])
    with pytest.raises(ValueError):
        model_soups.average([])


def test_greedy_soup_recipe_by_hand():
    # score = -(w - 2)^2: the soup of w=1 and w=3 is perfect, adding w=10 would hurt
    ingredients = [sd(10.0, 0.0), sd(1.0, 0.0), sd(3.0, 0.0)]

    def score(state):
        return -float((state["w"][0, 0] - 2.0) ** 2)

    own = [score(s) for s in ingredients]  # [-64, -1, -1]
    g = model_soups.greedy_soup(ingredients, score, scores=own)
    assert g.order == [1, 2, 0]  # sorted best first, ties keep input order
    assert g.chosen == [1, 2]  # w=3 lifts the soup (score 0 >= -1); w=10 would drop it
    assert torch.allclose(g.state_dict["w"], torch.full((2, 2), 2.0))
    assert g.val_score == 0.0
    assert [t["added"] for t in g.trace] == [True, True, False]


def test_greedy_soup_adds_on_ties_and_computes_scores():
    ingredients = [sd(1.0, 0.0), sd(1.0, 0.0)]
    g = model_soups.greedy_soup(ingredients, lambda s: 0.5)  # equal scores: ">=" adds the ingredient
    assert g.chosen == [0, 1]


def test_greedy_soup_never_below_best_ingredient_on_validation():
    torch.manual_seed(0)
    ingredients = [{"w": torch.randn(5)} for _ in range(6)]
    target = torch.zeros(5)

    def score(s):
        return -float(((s["w"] - target) ** 2).sum())

    g = model_soups.greedy_soup(ingredients, score)
    assert g.val_score >= max(score(s) for s in ingredients)


def test_roll_and_perturb():
    x = torch.arange(5.0).repeat(2, 1)
    out = model_soups.roll_last(x, torch.tensor([1, -2]))
    assert out.tolist() == [[4.0, 0.0, 1.0, 2.0, 3.0], [2.0, 3.0, 4.0, 0.0, 1.0]]
    gen = torch.Generator().manual_seed(0)
    same = model_soups.perturb(x, 0, 0.0, 0.0, gen)
    assert torch.equal(same, x)
    imgs = torch.zeros(3, 1, 4, 4)
    imgs[:, :, :, 0] = 1.0
    rolled = model_soups.roll_last(imgs, torch.tensor([1, 2, 3]))
    assert rolled[1, 0, :, 2].eq(1).all() and rolled[1].sum() == 4


def test_coarse_labels_and_splits():
    y = torch.arange(10)
    assert model_soups.coarse_labels(y, 10, 5).tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    assert torch.equal(model_soups.coarse_labels(y, 10, 10), y)
    s = model_soups.splits(100, 10, 20, 0, seed=1)
    assert len(s["val"]) == 10 and len(s["ft"]) == 20 and len(s["pretrain"]) == 70
    assert len(set(s["val"]) | set(s["ft"]) | set(s["pretrain"])) == 100
    with pytest.raises(ValueError):
        model_soups.splits(100, 60, 40, 0, seed=1)


def test_config_profiles_validate_and_reject_bad_values():
    for profile in ("smoke", "default", "full"):
        load_config("model_soups", profile=profile)
    with pytest.raises(config.ConfigError, match="unknown key"):
        load_config("model_soups", profile="smoke", overrides={"lr": 0.1})
    with pytest.raises(config.ConfigError):
        load_config(
            "model_soups",
            profile="smoke",
            overrides={"ft_lrs": [0.001], "ft_augment": [False], "ft_seeds": 1},
        )
    with pytest.raises(config.ConfigError):
        load_config("model_soups", profile="smoke", overrides={"ft_augment": []})
    with pytest.raises(config.ConfigError):
        load_config("model_soups", profile="smoke", overrides={"ft_lrs": [0.001, -1.0]})
    with pytest.raises(config.ConfigError, match="shift_scale"):
        load_config("model_soups", profile="smoke", overrides={"shift_scale": 1.5})


def test_packed_ingredients_train_like_their_runs_one_by_one():
    """pack > 0: a seed's ingredients fine-tuned in one vmapped model, each with its own learning rate,
    batch order and augmentation draws, end where they end one by one (float tolerance: another draw), and
    an ingredient's weights do not depend on what shares its pack."""
    over = {"n_seeds": 1, "workers": 1, "ft_epochs": 2, "ft_augment": [False, True], "ft_seeds": 1}
    cfg = load_config("model_soups", profile="smoke", overrides=over)
    ds = model_soups.data.load(cfg.dataset)
    x, y = torch.as_tensor(ds.x_train[:300]), torch.as_tensor(ds.y_train[:300])
    torch.manual_seed(0)
    model = model_soups.models.build(cfg.model, ds.input_shape, ds.n_classes, width=cfg.width)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    sweep = [(1e-3, False, 0), (3e-3, True, 0), (1e-3, True, 1)]
    packed_cfg = cfg.model_copy(update={"pack": 4})
    together = model_soups._fine_tune_pack(packed_cfg, model, start, x, y, sweep, 0)
    for (lr, aug, s), got in zip(sweep, together):
        alone = model_soups._fine_tune(cfg, model, start, x, y, lr, aug, s, 0)
        for k, v in alone.items():
            torch.testing.assert_close(got[k], v, atol=1e-5, rtol=1e-4)
            assert not torch.equal(v, start[k])  # it trained
    last = model_soups._fine_tune_pack(packed_cfg, model, start, x, y, sweep[2:], 0)[0]
    assert all(torch.equal(last[k], together[2][k]) for k in last)


def test_a_packed_seed_gives_the_arms_of_the_plain_one():
    cfg = load_config("model_soups", profile="smoke", overrides={"n_seeds": 2, "workers": 1})
    plain = model_soups.run(cfg.model_copy(update={"pack": 0}))
    packed = model_soups.run(cfg.model_copy(update={"pack": 8}))
    assert list(packed.runs["arm"]) == list(plain.runs["arm"])
    for col in ("val_acc", "test_acc", "shift_acc"):
        assert packed.history[col].to_numpy() == pytest.approx(plain.history[col].to_numpy(), abs=0.01)


def test_packed_pretraining_trains_each_seed_as_alone():
    """pack > 0: the pretraining of a look's seeds as one pack of width pack // 2 (each member its own
    init, split, batch stream and augmentation draws) ends where each seed's own pretraining ends (float
    tolerance), and a seed's weights do not depend on the seeds beside it."""
    over = {"workers": 1, "pretrain_epochs": 2, "pretrain_size": 600}
    cfg = load_config("model_soups", profile="smoke", overrides=over)
    packed_cfg = cfg.model_copy(update={"pack": 8})
    ds = model_soups.data.load(cfg.dataset)
    cpu = torch.device("cpu")
    reps = [0, 1, 2]
    seeds = [model_soups._seed_data(cfg, ds, r, cpu) for r in reps]
    nets = [model_soups._fresh(cfg, ds, r, cpu) for r in reps]
    start = [{k: v.clone() for k, v in n.state_dict().items()} for n in nets]
    model_soups._pretrain_pack(packed_cfg, ds, nets, seeds, reps, cpu)
    for r, d, net, before in zip(reps, seeds, nets, start):
        alone = model_soups._fresh(cfg, ds, r, cpu)
        assert all(torch.equal(alone.state_dict()[k], v) for k, v in before.items())  # the same init
        model_soups._pretrain(cfg, ds, alone, d, r, cpu)
        for k, v in alone.state_dict().items():
            torch.testing.assert_close(net.state_dict()[k], v, atol=1e-5, rtol=1e-4)
            assert not torch.equal(v, before[k])  # it trained
    last = [model_soups._fresh(cfg, ds, 2, cpu)]
    model_soups._pretrain_pack(packed_cfg, ds, last, seeds[2:], reps[2:], cpu)
    assert all(torch.equal(v, nets[2].state_dict()[k]) for k, v in last[0].state_dict().items())
