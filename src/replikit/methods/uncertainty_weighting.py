"""Multi-Task Learning Using Uncertainty to Weigh Losses for Scene Geometry and Semantics
(Kendall, Gal, Cipolla, CVPR 2018).

Claims (abstract): "We propose a principled approach to multi-task deep learning which weighs
multiple loss functions by considering the homoscedastic uncertainty of each task. [...] Perhaps
surprisingly, we show our model can learn multi-task weightings and outperform separate models trained
individually on each task." Sec. 5 / Fig. 2: the learned weighting beats equal weighting and lands near
the best fixed weights of a grid search (CityScapes, classification + depth regression).
Reference code: none published by the authors; the loss below is the paper's eqs. 7 and 10.

Algorithm. One learned log-variance s_i = log sigma_i^2 per task, trained with the network:
    L = sum_regression 1/(2 sigma_i^2) L_i + log sigma_i  +  sum_classification 1/sigma_i^2 L_i + log sigma_i
      = sum_i c_i exp(-s_i) L_i + s_i / 2,    c_i = 1/2 (regression), 1 (classification)
(``multitask.uncertainty_loss``). The switch that turns it off is the ``equal`` arm (w_i = 1).

Small scale (default profile): scikit-learn digits (``data.load('digits')``; 20% of the training split
held out for validation), three tasks on one shared MLP trunk (2 x 128 ReLU) with a linear head each:
    digit class (10-way cross-entropy, ~2.3 at the start),
    ink mass (mean pixel intensity, standardised, times ``mass_scale`` = 10: MSE ~100 at the start),
    row centroid (intensity-weighted mean row, standardised, times ``centroid_scale`` = 0.1: MSE ~0.01),
so the raw losses differ by four orders of magnitude, as depth and segmentation losses do.
Arms, paired by seed (same split, initialisation, batches):
    equal          w = (1, 1, 1)
    uncertainty    learned s_i (initialised at 0), Adam with a learning rate of their own (0.01,
                   ``log_var_lr``): each s_i has to travel log(L_i(0) / L_i(end)), several units, in
                   our ~600 steps, and Adam moves a parameter by at most about its learning rate per
                   step (at the model's 1e-3 they barely leave 0: pilot); 0.05 overshot (weights
                   followed the vanishing training losses, validation error up), so 0.01 was kept
    single_<task>  one network per task (the single-task baselines), combined into the arm ``single``
    grid           fixed weights w_cls = 1, w_mass in {0.01, 0.1, 1}, w_centroid in {1, 10, 100} (a log
                   grid around equal weighting and the ratios uncertainty learns); per seed the point
                   with the best validation score is the arm ``grid`` (its test score is reported)
Metric: scale-free error per task (classification: error / 0.9, regression: MSE / var(target); 1 =
chance or the mean predictor), averaged over the three tasks (``test_nerr``); the classification
accuracy is reported too.
Full profile: CIFAR-10 with the same three image-derived tasks on a ResNet-18 trunk, a stand-in for
the paper's CityScapes (documented deviation; it only validates here, no GPU and no data).
Settled on pilot seeds (base seed 0, default profile, 8 seeds, 2 CPU cores; the committed run before the
claims got declared deltas; mean scale-free test error, lower is better): equal 0.0640, uncertainty
0.0608, grid (validation-chosen) 0.0538, single-task networks 0.0427; digit accuracy equal 93.8%,
uncertainty 96.2%, single-task 97.2%; learned weights relative to the class task: mass 0.03, centroid 41.
Uncertainty minus grid: +0.0070 [+0.0024, +0.0116] in absolute error, i.e. about 13% worse than the grid,
while the grid is 19% better than equal weighting. The old absolute margin of 0.02 was 37% of the grid's
error and called that "near the grid"; ``near_grid`` is now a non-inferiority claim with a margin of 10%
*relative to the grid's error, per seed* (half the grid's gain over equal weighting; reason in the claim),
which these pilot numbers do not clear. The default-profile notebook on the new pilot seeds
(``--set seed=pilot``, 8 seeds, run after the margin was declared): equal 0.0657, uncertainty 0.0613, grid
0.0501, single-task 0.0423; uncertainty vs grid -22.8% [-38.7%, -6.9%] relative (the grid 24% better than
equal weighting), so ``near_grid`` is inconclusive there at n = 8; digit accuracy +2.6 points over equal
weighting [+2.2, +3.0]. The other claims' smallest effects of interest are declared
beside them (``delta``, ``delta_reason``). Verdicts on confirmation seeds:
``results/uncertainty_weighting/verdict.json``.
"""

from __future__ import annotations

import itertools
import math
from typing import Literal

import numpy as np
import pandas as pd
import pydantic

from replikit import data, packed, sequential, train
from replikit.claims import Claim
from replikit.config import MethodConfig, derive_seed
from replikit.families import multitask
from replikit.results import Outcome, Timer

NAME = "uncertainty_weighting"
PAPER = "Kendall et al. 2018"
TASK_NAMES = ("class", "mass", "centroid")


class Config(MethodConfig):
    """Uncertainty weighting's knobs; sizes per profile: params.yaml's ``uncertainty_weighting.profiles``."""

    dataset: Literal["digits", "cifar10"] = pydantic.Field("digits", description="image data set")
    mass_scale: float = pydantic.Field(
        10.0, gt=0.0, le=1e4, description="ink-mass target = standardised x this"
    )
    centroid_scale: float = pydantic.Field(
        0.1, gt=0.0, le=1e4, description="row-centroid target = standardised x this"
    )
    val_fraction: float = pydantic.Field(
        0.2, gt=0.0, lt=0.9, description="training data held out for validation"
    )
    train_subset: int = pydantic.Field(0, ge=0, description="use the first N training examples (0 = all)")
    model: Literal["mlp", "cnn2d", "resnet18"] = pydantic.Field("mlp", description="shared trunk")
    width: int = pydantic.Field(128, ge=4, le=4096, description="trunk units (MLP) or channels (CNN)")
    depth: int = pydantic.Field(2, ge=1, le=16, description="trunk ReLU layers (MLP)")
    init_log_var: float = pydantic.Field(0.0, ge=-10.0, le=10.0, description="initial s_i = log sigma_i^2")
    max_grad_norm: float | None = pydantic.Field(
        None,
        gt=0.0,
        description="clip the global gradient norm (full profile: SGD at 0.05 on ResNet-18 diverged within "
        "20 steps without it, the mass target's std of mass_scale = 10 dominating the gradient)",
    )
    optimizer: Literal["adam", "sgd"] = "adam"
    lr: float = pydantic.Field(1e-3, gt=0.0, le=1.0, description="model learning rate")
    log_var_lr: float = pydantic.Field(
        1e-2, gt=0.0, le=1.0, description="learning rate of the log-variances s_i"
    )
    weight_decay: float = pydantic.Field(0.0, ge=0.0, le=0.1)
    epochs: int = pydantic.Field(40, ge=1, le=1000)
    batch_size: int = pydantic.Field(64, ge=8, le=8192)
    grid_mass: list[float] = pydantic.Field(
        default_factory=lambda: [1e-2, 1e-1, 1.0],
        description="grid values of the ink-mass weight (w_cls = 1)",
    )
    grid_centroid: list[float] = pydantic.Field(
        default_factory=lambda: [1.0, 10.0, 100.0],
        description="grid values of the row-centroid weight (w_cls = 1)",
    )
    single_task: bool = pydantic.Field(True, description="train the single-task baselines")
    pack: int = packed.knob(
        "each seed's runs (equal, uncertainty, the grid, the single-task networks: 14 by default)"
    )  # type: ignore[assignment]
    _resolve_pack = packed.auto_width(lambda c: c.get("model") == "mlp")

    @pydantic.field_validator("grid_mass", "grid_centroid")
    @classmethod
    def _positive(cls, v: list[float]) -> list[float]:
        if not v or any(not (0.0 < w <= 1e6) for w in v):
            raise ValueError("grid weights must be in (0, 1e6], at least one")
        return v


QUOTE_PRINCIPLED = (
    "We propose a principled approach to multi-task deep learning which weighs multiple loss functions by "
    "considering the homoscedastic uncertainty of each task."
)
CLAIMS = [
    Claim(
        id="uncertainty_weighting.beats_equal",
        paper=PAPER,
        quote=QUOTE_PRINCIPLED,
        metric="test_nerr",
        treatment="uncertainty",
        baseline="equal",
        higher_is_better=False,
        delta=0.05,
        relative=True,
        delta_reason="5% of equal weighting's error: a quarter of what the validation-chosen grid gains "
        "over equal weighting on pilot seeds (19%); a weighting rule that buys less is not worth learning",
        note="mean over the 3 tasks of the scale-free test error (class error / 0.9, MSE / var); lower is "
        "better.",
    ),
    Claim(
        id="uncertainty_weighting.near_grid",
        paper=PAPER,
        quote="This allows us to simultaneously learn various quantities with different units or scales in "
        "both classification and regression settings.",
        metric="test_nerr",
        treatment="uncertainty",
        baseline="grid",
        higher_is_better=False,
        kind="non_inferiority",
        delta=0.10,
        relative=True,
        delta_reason="half of what the grid search gains over equal weighting on pilot seeds (equal 0.0640 "
        "vs grid 0.0538: 19% relative): 'near the grid' = keeps at least half of the grid's gain, the usual "
        "non-inferiority convention (margin = half the active control's effect), hence at most 10% worse",
        note="Paper Fig. 2 and Table 1: the learned weighting does as well as the best fixed weights of a "
        "grid search. Grid point chosen on validation, per seed; margin relative to the grid's error.",
    ),
    Claim(
        id="uncertainty_weighting.beats_single_task",
        paper=PAPER,
        quote="Perhaps surprisingly, we show our model can learn multi-task weightings and outperform "
        "separate models trained individually on each task.",
        metric="test_nerr",
        treatment="uncertainty",
        baseline="single",
        higher_is_better=False,
        delta=0.05,
        relative=True,
        delta_reason="5% of the single-task networks' error, the same smallest gain as against equal "
        "weighting",
        note="'single': each task's error from its own network (same trunk size, same training).",
    ),
    Claim(
        id="uncertainty_weighting.class_acc_vs_equal",
        paper=PAPER,
        quote=QUOTE_PRINCIPLED,
        metric="test_acc",
        treatment="uncertainty",
        baseline="equal",
        higher_is_better=True,
        delta=0.01,
        delta_reason="one point of digit accuracy (about 5 of the 540 test digits): smaller gains are within "
        "the spread of one seed",
        note="Paper Table 1: the uncertainty-weighted model beats equal weighting on the semantic task; here "
        "the classification task alone (accuracy).",
    ),
]


# =================================== data ==========================================================


def make_tasks(cfg: Config) -> list[multitask.Task]:
    return [
        multitask.Task("class", "classification", 10),
        multitask.Task("mass", "regression", 1),
        multitask.Task("centroid", "regression", 1),
    ]


def targets(cfg: Config, x: np.ndarray, y: np.ndarray, ref: np.ndarray) -> list[np.ndarray]:
    """[class, scaled ink mass, scaled row centroid]; standardised with the statistics of ``ref`` (train)."""
    out = [y.astype(np.int64)]
    for stat, scale in (("mass", cfg.mass_scale), ("row_centroid", cfg.centroid_scale)):
        v, r = multitask.image_statistic(x, stat), multitask.image_statistic(ref, stat)
        out.append((scale * (v - r.mean()) / (r.std() + 1e-8)).astype(np.float32)[:, None])
    return out


def splits(cfg: Config, rep: int) -> dict[str, tuple[np.ndarray, list[np.ndarray]]]:
    """train / val (carved from the training data, per repetition) / test, with their targets."""
    ds = data.load(cfg.dataset)
    x_all, y_all = ds.x_train[: cfg.train_subset or None], ds.y_train[: cfg.train_subset or None]
    tr, va = data.split(len(y_all), cfg.val_fraction, derive_seed(cfg.seed, NAME, "data", "val", rep))
    ref = x_all[tr]
    return {
        "train": (x_all[tr], targets(cfg, x_all[tr], y_all[tr], ref)),
        "val": (x_all[va], targets(cfg, x_all[va], y_all[va], ref)),
        "test": (ds.x_test, targets(cfg, ds.x_test, ds.y_test, ref)),
    }


# =================================== one run =======================================================


def _on_device(cfg: Config, rep: int, device) -> dict[str, tuple]:
    """The seed's train / val / test inputs and all three tasks' targets on ``device``."""
    return {
        k: (train.to_device(x, device), [train.to_device(y, device) for y in ys])
        for k, (x, ys) in splits(cfg, rep).items()
    }


def _kept(arm: str) -> list[int]:
    """The tasks an arm trains: one for single_<task>, all three otherwise."""
    return [TASK_NAMES.index(arm[len("single_") :])] if arm.startswith("single_") else [0, 1, 2]


def _model(
    cfg: Config, x_tr, arm: str, rep: int, tasks: list[multitask.Task], device
) -> multitask.MultiTaskNet:
    """The arm's network for this seed, with ``tasks``' heads. The initialisation depends on the seed and
    the arm's task set only: the multi-task arms share it exactly, and a single-task network's trunk is
    the same whether it carries only its own head or all three (heads start at zero, after the trunk)."""
    kept = [make_tasks(cfg)[i] for i in _kept(arm)]
    train.manual_seed(derive_seed(cfg.seed, NAME, "init", rep, "-".join(t.name for t in kept)))
    model = multitask.build(cfg.model, tuple(x_tr.shape[1:]), tasks, cfg.width, cfg.depth)
    return train.prepare_model(model, device)


def _weighting(cfg: Config, arm: str, n_tasks: int, weights) -> multitask.Weighting:
    if arm == "uncertainty":
        return multitask.Uncertainty(make_tasks(cfg)[:n_tasks], cfg.init_log_var)  # fit moves it
    if arm == "fixed":
        return multitask.Fixed(weights)
    return multitask.Equal(n_tasks)


def _row(
    cfg: Config, arm: str, rep: int, weights, model, tens: dict, keep: list[int], heads: list[int], w_now
) -> dict:
    """The run's row: its weights, and per kept task its validation and test errors (``heads``: where the
    kept tasks' outputs are among the model's)."""
    tasks = [make_tasks(cfg)[i] for i in keep]
    row: dict = {"arm": arm, "seed": rep}
    if weights is not None:
        row.update({f"grid_w_{TASK_NAMES[i]}": float(w) for i, w in enumerate(weights)})
    row.update({f"w_{t.name}": float(w_now[h]) for t, h in zip(tasks, heads)})
    for split in ("val", "test"):
        xs, ys = tens[split]
        outs = multitask.predict(model, xs)
        out, ts = [outs[h] for h in heads], [ys[i] for i in keep]
        nerr = multitask.normalized_errors(out, ts, tasks, multitask.target_variances(ts, tasks))
        for t, e in zip(tasks, nerr):
            row[f"{split}_nerr_{t.name}"] = float(e)
        if tasks[0].kind == "classification":
            row[f"{split}_acc"] = float((out[0].argmax(1) == ts[0]).float().mean())
    return row


def _training(cfg: Config, rep: int) -> dict:
    """What every run of a seed trains with, one by one or packed: the seed's batch stream, the schedule."""
    return {
        "epochs": cfg.epochs,
        "batch_size": cfg.batch_size,
        "seed": derive_seed(cfg.seed, NAME, "batches", rep),
        "lr": cfg.lr,
        "optimizer": cfg.optimizer,
        "weight_decay": cfg.weight_decay,
        "weighting_lr": cfg.log_var_lr,
    }


def _history(arm: str, rep: int, history: list[dict], keep: list[int], heads: list[int]) -> list[dict]:
    """The run's per-epoch history with its kept tasks' training losses and weights named by task
    (``loss_mass``, ``w_mass``; ``heads``: where the kept tasks are among the model's). The grid's runs
    (``fixed``) keep none: their weights never move, and they are most of the runs."""
    if arm == "fixed":
        return []
    names = [TASK_NAMES[i] for i in keep]
    return [
        {
            "arm": arm,
            "seed": rep,
            "epoch": h["epoch"],
            "train_loss": h["train_loss"],
            **{f"loss_{n}": h[f"loss_{j}"] for n, j in zip(names, heads)},
            **{f"w_{n}": h[f"w_{j}"] for n, j in zip(names, heads)},
        }
        for h in history
    ]


def by_task(history: pd.DataFrame, prefix: str) -> pd.DataFrame:
    """``history``'s per-task columns ``<prefix><task>`` (``loss_``, ``w_``) as rows: arm, seed, epoch,
    task, value; for figures with one line per task."""
    long = history.melt(
        id_vars=["arm", "seed", "epoch"],
        value_vars=[f"{prefix}{t}" for t in TASK_NAMES if f"{prefix}{t}" in history],
        var_name="task",
        value_name="value",
    )
    return long.assign(task=long["task"].str.removeprefix(prefix)).dropna(subset=["value"])


def weight_gap(history: pd.DataFrame) -> pd.DataFrame:
    """Per task, at the uncertainty arm's last epoch: the learned weight c_i exp(-s_i), the weight its
    training loss calls for, 1/(2 L_i) (the optimum of s_i), and their ratio (1: s_i has arrived);
    geometric means over seeds."""
    unc = history[history["arm"] == "uncertainty"]
    last = unc[unc["epoch"] == unc["epoch"].max()]
    rows = {}
    for t in TASK_NAMES:
        learned, called = np.log(last[f"w_{t}"]), np.log(0.5 / last[f"loss_{t}"])
        rows[t] = {
            "learned": np.exp(learned.mean()),
            "1/(2 L)": np.exp(called.mean()),
            "learned / called": np.exp((learned - called).mean()),
        }
    return pd.DataFrame(rows).T.rename_axis(f"epoch {int(last['epoch'].max())}")


def run_one(cfg: dict, arm: str, rep: int, weights: tuple[float, ...] | None = None) -> dict:
    """Train one arm for one seed: equal | uncertainty | fixed (``weights``) | single_<task>. Returns its
    ``row`` (weights, errors) and ``history`` (:func:`_history`)."""
    cfg = Config(**cfg)
    device = train.resolve_device(cfg.device)
    tens = _on_device(cfg, rep, device)
    keep = _kept(arm)
    tasks = [make_tasks(cfg)[i] for i in keep]
    x_tr, ys = tens["train"]
    model = _model(cfg, x_tr, arm, rep, tasks, device)
    weighting = _weighting(cfg, arm, len(tasks), weights)
    history = multitask.fit(
        model,
        weighting,
        x_tr,
        [ys[i] for i in keep],
        **_training(cfg, rep),
        desc=f"{arm} seed {rep}",
        max_grad_norm=cfg.max_grad_norm,
    )
    heads = list(range(len(keep)))
    return {
        "row": _row(cfg, arm, rep, weights, model, tens, keep, heads, weighting.weights()),
        "history": _history(arm, rep, history, keep, heads),
    }


def run_pack(cfg: dict, rep: int, members: list[tuple[str, tuple[float, ...] | None]]) -> list[dict]:
    """Runs ``(arm, weights)`` of seed ``rep`` as one pack of width ``cfg.pack``
    (:func:`replikit.families.multitask.fit_pack`): the seed's data and batch stream, each member with its
    own initialisation (:func:`_model`) and weighting. A single-task network is packed as the three-headed
    network with weights one-hot on its task: the other heads get exactly zero gradient, so its trunk and
    head train as the one-headed network does. Returns :func:`run_one`'s results, in ``members`` order."""
    cfg = Config(**cfg)
    if cfg.max_grad_norm is not None:
        raise ValueError("max_grad_norm clips the whole pack's norm: use pack: 0 with it")
    device = train.resolve_device(cfg.device)
    tens = _on_device(cfg, rep, device)
    tasks = make_tasks(cfg)
    x_tr, ys = tens["train"]
    models, weightings = [], []
    for arm, weights in members:
        models.append(_model(cfg, x_tr, arm, rep, tasks, device))
        if arm.startswith("single_"):
            weightings.append(multitask.Fixed([float(i in _kept(arm)) for i in range(len(tasks))]))
        else:
            weightings.append(_weighting(cfg, arm, len(tasks), weights))
    out = multitask.fit_pack(
        models,
        weightings,
        x_tr,
        ys,
        width=cfg.pack,
        **_training(cfg, rep),
        desc=f"pack of {len(members)} seed {rep}",
    )
    rows = []
    for model, (arm, weights), got in zip(models, members, out):
        if not math.isfinite(got["history"][-1]["train_loss"]):
            raise train.DivergenceError(f"{arm} seed {rep}: training loss {got['history'][-1]['train_loss']}")
        model.load_state_dict(got["state"])
        keep = _kept(arm)
        rows.append(
            {
                "row": _row(cfg, arm, rep, weights, model, tens, keep, keep, got["weights"]),
                "history": _history(arm, rep, got["history"], keep, keep),
            }
        )
    return rows


def _grid_point(row: dict) -> tuple[float, ...] | None:
    return tuple(row[f"grid_w_{t}"] for t in TASK_NAMES) if "grid_w_class" in row else None


def combine_single(table: pd.DataFrame) -> pd.DataFrame:
    """The single-task baselines as one arm: per seed, each task's error from its own network."""
    rows = []
    for seed, grp in table[table["arm"].str.startswith("single_")].groupby("seed"):
        row = {"arm": "single", "seed": seed}
        for _, r in grp.iterrows():
            name = r["arm"][len("single_") :]
            for split in ("val", "test"):
                row[f"{split}_nerr_{name}"] = r[f"{split}_nerr_{name}"]
            if name == "class":
                row.update({"val_acc": r["val_acc"], "test_acc": r["test_acc"]})
        rows.append(row)
    return pd.DataFrame(rows)


def with_means(table: pd.DataFrame) -> pd.DataFrame:
    for split in ("val", "test"):
        table[f"{split}_nerr"] = table[[f"{split}_nerr_{t}" for t in TASK_NAMES]].mean(axis=1)
    return table


def grid_best(table: pd.DataFrame) -> pd.DataFrame:
    """Per seed, the fixed-weight grid point with the lowest validation error, as arm ``grid``."""
    best = multitask.best_by_validation(table[table["arm"] == "fixed"], ["seed"], "val_nerr").copy()
    best["arm"] = "grid"
    return best


def run(cfg: Config, select: sequential.Select = sequential.every) -> Outcome:
    """Equal, uncertainty, single-task and the weight grid, over ``n_seeds`` seeds.

    ``select(arm, seed)``: train only those arms of that seed (``replikit.sequential``'s later looks); the
    ``single`` arm's runs (one network per task) and the ``grid`` arm's (every grid point) come whole.
    """
    base = {"cfg": cfg.model_dump()}

    arms = ["equal", "uncertainty"] + ([f"single_{t}" for t in TASK_NAMES] if cfg.single_task else [])
    tasks = [
        dict(base, arm=a, rep=r)
        for r in range(cfg.n_seeds)
        for a in arms
        if select("single" if a.startswith("single_") else a, r)
    ]
    grid = [(1.0, wm, wc) for wm, wc in itertools.product(cfg.grid_mass, cfg.grid_centroid)]
    tasks += [
        dict(base, arm="fixed", rep=r, weights=w)
        for r in range(cfg.n_seeds)
        if select("grid", r)
        for w in grid
    ]
    with Timer() as timer:
        if cfg.pack:  # each seed's runs in packs of cfg.pack, in task order
            packs = [
                dict(base, rep=rep, members=[(k["arm"], k.get("weights")) for k in chunk])
                for rep, chunk in packed.chunks(tasks, cfg.pack, key=lambda k: k["rep"])
            ]
            done = train.run_many(run_pack, packs, cfg.workers, cfg.device, desc="uncertainty packs")
            results = [r for pack in done for r in pack]
            order = {(k["arm"], k["rep"], k.get("weights")): i for i, k in enumerate(tasks)}
            results.sort(key=lambda r: order[(r["row"]["arm"], r["row"]["seed"], _grid_point(r["row"]))])
        else:
            results = train.run_many(run_one, tasks, cfg.workers, cfg.device, desc="uncertainty runs")
    table = pd.DataFrame([r["row"] for r in results])
    history = pd.DataFrame([h for r in results for h in r["history"]])
    parts = [table[~table["arm"].str.startswith("single_")]]
    if cfg.single_task:
        parts.append(combine_single(table))
    runs = with_means(pd.concat(parts, ignore_index=True))
    runs = pd.concat([runs, grid_best(runs)], ignore_index=True)
    main = runs[runs["arm"] != "fixed"].reset_index(drop=True)
    return Outcome(
        runs=main,
        history=history,
        extras={
            "grid": runs[runs["arm"] == "fixed"].reset_index(drop=True),
            "single_runs": table[table["arm"].str.startswith("single_")],
        },
        runtime_s=timer.seconds,
        device=str(train.resolve_device(cfg.device)),
    )
