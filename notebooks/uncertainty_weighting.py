# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Multi-Task Learning Using Uncertainty to Weigh Losses for Scene Geometry and Semantics
# Kendall, Gal, Cipolla (CVPR 2018).
#
# > *"We propose a principled approach to multi-task deep learning which weighs multiple loss functions
# > by considering the homoscedastic uncertainty of each task. [...] Perhaps surprisingly, we show our
# > model can learn multi-task weightings and outperform separate models trained individually on each
# > task."*
#
# Each task gets a learned log-variance $s_i = \log\sigma_i^2$; the loss is
# $\sum_i c_i e^{-s_i} L_i + s_i/2$ with $c_i = 1/2$ for regression and $1$ for classification, so
# each task's effective weight $c_i/\sigma_i^2$ settles where its loss is (weight $\approx 1/(2L_i)$).
# Small stand-in for the paper's scene geometry and semantics: scikit-learn digits, one shared MLP
# trunk, three heads: the digit class, the ink mass (scaled x10) and the row centroid (scaled x0.1),
# raw losses four orders of magnitude apart. Arms: `equal`, `uncertainty`, `single` (one network per
# task) and `grid` (the best fixed weights of a grid, chosen on validation data).
# Algorithm and claims: `src/replikit/families/multitask.py`, `src/replikit/methods/uncertainty_weighting.py`.

# %% tags=["parameters"]
profile = None  # smoke | default | full; None: params.yaml's `profile`
overrides = {}  # the method's parameters to change, e.g. {"mass_scale": 100.0}; validated
out_dir = None  # None: scratch/uncertainty_weighting (interactive runs never touch DVC's results/)

# %%
import numpy as np

from replikit import claims, plots, results, sequential
from replikit.methods import load_config
from replikit.methods import uncertainty_weighting as uw

cfg = load_config("uncertainty_weighting", profile=profile, overrides=overrides)
cfg

# %% [markdown]
# ## 1. Train every arm, seed by seed (same split, initialisation and batches across arms)

# %%
outcome, verdicts = sequential.replicate(uw, cfg)
runs, grid = outcome.runs, outcome.extras["grid"]
print(f"{len(runs) + len(grid)} rows in {outcome.runtime_s:.0f} s on {outcome.device}")
cols = ["test_nerr", "test_acc"] + [f"test_nerr_{t}" for t in uw.TASK_NAMES]
runs.groupby("arm")[cols].agg(["mean", "std"]).round(4)

# %% [markdown]
# Learned effective weights $c_i e^{-s_i}$ (uncertainty arm) and the grid point validation chose, per seed:

# %%
runs[runs["arm"].isin(["uncertainty", "grid"])][
    ["arm", "seed", "w_class", "w_mass", "w_centroid", "val_nerr", "test_nerr"]
].round(4)

# %% [markdown]
# ## 2. The learned weights over training
# Left: the uncertainty arm's effective weights $c_i e^{-s_i}$, epoch by epoch (geometric mean over
# seeds, 95% band), and dashed, in the same colour, the weight each task's loss calls for, $1/(2L_i)$
# ($L_i$: the task's mean training loss of the epoch): where the two lines meet, $s_i$ sits at its
# optimum. Adam moves each $s_i$ by at most about `log_var_lr` a step, so a weight far from its optimum
# climbs along a straight line on this log axis until it gets there (or training ends). Middle and
# right: each task's training loss under equal and under uncertainty weighting.

# %%
hist = outcome.history
learned = hist[hist["arm"] == "uncertainty"]
called = learned.assign(**{f"w_{t}": 0.5 / learned[f"loss_{t}"] for t in uw.TASK_NAMES})
fig_weights, axes = plots.plt.subplots(1, 3, figsize=(15, 4))
plots.band(uw.by_task(learned, "w_"), "epoch", "value", "task", ax=axes[0], log=True)
colors = plots.arm_palette(list(uw.TASK_NAMES))
for task, part in uw.by_task(called, "w_").groupby("task"):
    mean = np.exp(np.log(part["value"]).groupby(part["epoch"]).mean())
    axes[0].plot(mean.index, mean, color=colors[task], ls="--", lw=1)
axes[0].plot([], [], color="0.3", ls="--", lw=1, label="1/(2 L_i)")
axes[0].legend(fontsize=8, ncol=4, loc="upper center", bbox_to_anchor=(0.5, -0.17))
axes[0].set(yscale="log", ylabel="effective weight", title="Learned task weights (uncertainty)")
for ax, arm in zip(axes[1:], ["equal", "uncertainty"]):
    plots.band(uw.by_task(hist[hist["arm"] == arm], "loss_"), "epoch", "value", "task", ax=ax, log=True)
    ax.legend(fontsize=8, ncol=3, loc="center", bbox_to_anchor=(0.5, 0.36))  # between the curves
    ax.set(yscale="log", ylabel="training loss (raw)", title=f"Training loss per task ({arm})")
axes[2].sharey(axes[1])
fig_weights.tight_layout()

# %% [markdown]
# How far each learned weight got by the end of training (1: at the optimum its loss calls for):

# %%
uw.weight_gap(hist).round(4)

# %% [markdown]
# ## 3. Performance over the weight grid, learned weights marked
# Mean over seeds of the scale-free error (averaged over the three tasks) for each fixed weighting
# ($w_{class} = 1$), on validation data (what the grid search sees) and on test data. The star marks
# the ratios $w_{mass}/w_{class}$ and $w_{centroid}/w_{class}$ that uncertainty weighting learned (one
# small dot per seed), the cross marks equal weighting.

# %%
unc = runs[runs["arm"] == "uncertainty"]
ratios = np.log10(np.c_[unc["w_mass"] / unc["w_class"], unc["w_centroid"] / unc["w_class"]])
fig_grid, axes = plots.plt.subplots(1, 2, figsize=(13, 4.6))
for ax, split in zip(axes, ["val", "test"]):
    surf = grid.groupby(["grid_w_mass", "grid_w_centroid"])[f"{split}_nerr"].mean().unstack()
    lm, lc = np.log10(surf.index.to_numpy()), np.log10(surf.columns.to_numpy())
    im = ax.imshow(
        surf.to_numpy().T,
        origin="lower",
        cmap="viridis_r",
        aspect="auto",
        extent=[lm.min() - 0.5, lm.max() + 0.5, lc.min() - 0.5, lc.max() + 0.5],
    )
    for i, a in enumerate(lm):
        for j, b in enumerate(lc):
            ax.text(
                a,
                b - 0.28,
                f"{surf.to_numpy()[i, j]:.3f}",
                ha="center",
                va="center",
                fontsize=8,
                bbox={"facecolor": "w", "alpha": 0.7, "lw": 0, "pad": 1},
            )
    ax.scatter(ratios[:, 0], ratios[:, 1], s=12, color="tab:red", zorder=3)
    ax.scatter(
        *ratios.mean(0),
        marker="*",
        s=260,
        color="tab:red",
        edgecolor="k",
        zorder=4,
        label=f"uncertainty (mean {unc[f'{split}_nerr'].mean():.3f})",
    )
    ax.scatter(
        0,
        0,
        marker="X",
        s=120,
        color="w",
        edgecolor="k",
        zorder=4,
        label=f"equal (mean {runs[runs['arm'] == 'equal'][f'{split}_nerr'].mean():.3f})",
    )
    ax.set(
        title=f"Mean scale-free error, {split} data",
        xlabel="log10 w_mass / w_class",
        ylabel="log10 w_centroid / w_class",
    )
    ax.set_xlim(min(lm.min(), ratios[:, 0].min(), 0) - 0.6, max(lm.max(), ratios[:, 0].max(), 0) + 0.6)
    ax.set_ylim(min(lc.min(), ratios[:, 1].min(), 0) - 0.6, max(lc.max(), ratios[:, 1].max(), 0) + 0.6)
    ax.legend(fontsize=8, loc="upper left")
    fig_grid.colorbar(im, ax=ax, label="mean error (lower is better)")
fig_grid.tight_layout()

# %% [markdown]
# ## 4. Each task's test error by arm

# %%
arms = [a for a in ["equal", "uncertainty", "grid", "single"] if a in set(runs["arm"])]
long = runs[runs["arm"].isin(arms)].melt(
    id_vars=["arm", "seed"],
    value_vars=[f"test_nerr_{t}" for t in uw.TASK_NAMES],
    var_name="task",
    value_name="error",
)
long["task"] = long["task"].str.replace("test_nerr_", "")
fig_tasks, ax = plots.plt.subplots(figsize=(7.5, 3.8))
plots.sns.barplot(
    long,
    x="task",
    y="error",
    hue="arm",
    hue_order=arms,
    palette=plots.arm_palette(arms),
    errorbar=plots.t95,
    ax=ax,
)
ax.set(title="Test error per task (class: error/0.9; regression: MSE/var)", ylabel="scale-free test error")

# %% [markdown]
# ## 5. Verdict
# Declared in `uncertainty_weighting.CLAIMS` before the final runs: uncertainty weighting against
# equal weighting (mean scale-free error; classification accuracy), against the validation-chosen grid
# point (non-inferiority: at most 10% worse than the grid's error, relative, per seed) and against
# separate single-task networks. Each claim's smallest effect of interest and its reason: `uw.CLAIMS`.

# %%
fig_paired, axes = plots.plt.subplots(1, 2, figsize=(10, 3.8))
plots.paired_effects(runs, "test_nerr", arms, ax=axes[0], title="Mean scale-free test error")
plots.paired_effects(runs, "test_acc", arms, ax=axes[1], title="Digit accuracy")
claims.table(verdicts)

# %%
saved = results.save(
    "uncertainty_weighting",
    cfg,
    outcome,
    verdicts,
    figures={
        "weights": fig_weights,
        "weight_grid": fig_grid,
        "task_errors": fig_tasks,
        "paired": fig_paired,
    },
    out_dir=out_dir,
)
print("saved to", saved)
