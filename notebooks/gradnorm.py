# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # GradNorm: Gradient Normalization for Adaptive Loss Balancing in Deep Multitask Networks
# Chen, Badrinarayanan, Lee, Rabinovich (ICML 2018).
#
# > *"We present a gradient normalization (GradNorm) algorithm that automatically balances training in
# > deep multitask models by dynamically tuning gradient magnitudes. [...] GradNorm also matches or
# > surpasses the performance of exhaustive grid search methods, despite only involving a single
# > asymmetry hyperparameter α."*
#
# The paper's synthetic benchmark: T regression tasks $f_i(x) = \sigma_i \tanh((B + \epsilon_i)x)$ whose
# output scales $\sigma_i$ span a factor 100, a shared 4 x 100 ReLU trunk, one linear head per task.
# GradNorm learns task weights $w_i$ so that the weighted gradient norms on the last shared layer
# track $\bar G\, r_i^\alpha$ ($r_i$: the task's relative inverse training rate), renormalised to sum T.
# Arms per optimiser (SGD, Adam) and T (2, 10): `equal` (w = 1: GradNorm switched off), `gradnorm`,
# and `grid` (fixed $w_i \propto \sigma_i^{-2\gamma}$, the best of a small grid on validation data).
# Every arm runs at each learning rate of one shared grid per optimiser and keeps, per seed, the one with
# the lowest validation loss, so no arm trains at a rate tuned for another.
# Algorithm, deviations and claims: `src/replikit/families/multitask.py`, `src/replikit/methods/gradnorm.py`.

# %% tags=["parameters"]
profile = None  # smoke | default | full; None: params.yaml's `profile`
overrides = {}  # the method's parameters to change, e.g. {"alpha": 1.5}; validated
out_dir = None  # None: scratch/gradnorm (interactive runs never touch DVC's results/)

# %%
import numpy as np

from replikit import claims, plots, results, sequential
from replikit.methods import gradnorm, load_config

cfg = load_config("gradnorm", profile=profile, overrides=overrides)
cfg

# %% [markdown]
# ## 1. Train every arm, seed by seed (the same data, initialisation and batches across arms)

# %%
outcome, verdicts = sequential.replicate(gradnorm, cfg)
runs = outcome.runs
print(f"{len(runs)} rows in {outcome.runtime_s:.0f} s on {outcome.device}")
runs.groupby(["optimizer", "T", "weighting"])[["test_nloss", "val_nloss", "rate_spread"]].agg(
    ["mean", "std"]
).round(4)

# %% [markdown]
# The learning rate each arm picked on validation, and which grid point validation picked, per seed:

# %%
runs.pivot_table(index=["optimizer", "T", "weighting"], columns="seed", values="lr", aggfunc="first")

# %%
runs[runs["weighting"] == "grid"].pivot_table(
    index=["optimizer", "T"], columns="seed", values="grid_choice", aggfunc="first"
)

# %% [markdown]
# ## 2. GradNorm's task weights over training, against the tasks' output scales $\sigma_i$
# Mean over seeds; one line per task, coloured by $\sigma_i$ (log scale). Dashed: the inverse-variance
# weights $w_i \propto \sigma_i^{-2}$ (sum T).

# %%
trace = outcome.extras["weight_trace"]
t_show = max(cfg.task_counts)
sig = np.asarray(outcome.extras["sigma"][t_show])
fig_weights, axes = plots.plt.subplots(
    1, len(cfg.optimizers), figsize=(5.6 * len(cfg.optimizers), 4), squeeze=False
)
cmap = plots.plt.get_cmap("viridis")
for ax, opt in zip(axes[0], cfg.optimizers):
    tr = trace[(trace["optimizer"] == opt) & (trace["T"] == t_show)].groupby("step").mean(numeric_only=True)
    inv = gradnorm.grid_weights(sig, 1.0)
    for i, s in enumerate(sig):
        color = cmap(i / max(1, len(sig) - 1))
        ax.plot(tr.index, tr[f"w_{i}"], color=color, label=f"σ={s / cfg.target_scale:.3g}")
        ax.axhline(inv[i], color=color, ls="--", lw=0.8)
    ax.plot([], [], ls="--", lw=0.8, color="0.3", label="dashed: w_i ∝ σ_i^-2")
    ax.set_yscale("log")
    ax.set(
        title=f"GradNorm weights, {opt.upper()}, T={t_show}", xlabel="training step", ylabel="task weight w_i"
    )
axes[0][-1].legend(title="task scale (paper units)", fontsize=7, ncol=2, loc="lower left")

# %% [markdown]
# ## 3. Normalised test loss per task (test MSE / target variance), against $\sigma_i$
# Mean over seeds, error bars one standard deviation; dotted: the mean predictor (1).

# %%
fig_tasks, axes = plots.plt.subplots(
    len(cfg.task_counts),
    len(cfg.optimizers),
    figsize=(5.6 * len(cfg.optimizers), 3.8 * len(cfg.task_counts)),
    squeeze=False,
)
arm_colors = plots.arm_palette(["equal", "gradnorm", "grid"])
for row, t in zip(axes, cfg.task_counts):
    s_t = np.asarray(outcome.extras["sigma"][t]) / cfg.target_scale
    for ax, opt in zip(row, cfg.optimizers):
        for w in ["equal", "gradnorm", "grid"]:
            sub = runs[(runs["optimizer"] == opt) & (runs["T"] == t) & (runs["weighting"] == w)]
            if len(sub):
                per = sub[[f"test_nloss_{i}" for i in range(t)]]
                ax.errorbar(
                    s_t,
                    per.mean().to_numpy(),
                    yerr=per.std().fillna(0).to_numpy(),
                    marker="o",
                    capsize=3,
                    color=arm_colors[w],
                    label=f"{w} (mean {sub['test_nloss'].mean():.3f})",
                )
        ax.set_xscale("log")
        ax.axhline(1.0, color="0.5", ls=":", lw=1)
        ax.set(
            title=f"{opt.upper()}, T={t}",
            xlabel="task output scale σ_i (paper units)",
            ylabel="test MSE / var(target)",
        )
        ax.legend(fontsize=8)
fig_tasks.tight_layout()

# %% [markdown]
# ## 4. Verdict
# Declared in `gradnorm.CLAIMS` before the final runs: GradNorm against equal weighting (normalised
# test loss, and the spread of the tasks' training rates) and against the validation-chosen grid point
# (non-inferiority: at most 10% worse, relative, per seed), for each optimiser and T. Adam carries the
# verdict; SGD is reported alongside. Each claim's smallest effect of interest, with its reason:
# `gradnorm.CLAIMS`.

# %%
pairs = [(opt, t) for opt in cfg.optimizers for t in cfg.task_counts]
fig_paired, axes = plots.plt.subplots(1, len(pairs), figsize=(3.6 * len(pairs), 3.6), squeeze=False)
for ax, (opt, t) in zip(axes[0], pairs):
    sub = runs[(runs["optimizer"] == opt) & (runs["T"] == t)]
    arms = [
        gradnorm.arm_name(opt, t, w)
        for w in ("equal", "gradnorm", "grid")
        if gradnorm.arm_name(opt, t, w) in set(sub["arm"])
    ]
    plots.paired_effects(sub, "test_nloss", arms, ax=ax, title=f"{opt.upper()}, T={t}")
    ax.set_xticks(range(len(arms)), [a.split("/")[-1] for a in arms])
    ax.set_ylabel("normalised test loss")
fig_paired.tight_layout()
claims.table(verdicts)

# %%
saved = results.save(
    "gradnorm",
    cfg,
    outcome,
    verdicts,
    figures={"weights": fig_weights, "task_losses": fig_tasks, "paired": fig_paired},
    out_dir=out_dir,
)
print("saved to", saved)
