# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # TIES-Merging: Resolving Interference When Merging Models
# Yadav, Tam, Choshen, Raffel, Bansal (NeurIPS 2023).
#
# > *"We find that TIES-Merging outperforms several existing methods in diverse settings covering a
# > range of modalities, domains, number of tasks, model sizes, architectures, and fine-tuning
# > settings."*
#
# TIES merges task vectors in three steps: **trim** each to its top-k% magnitudes, **elect** a sign per
# parameter (the sign with the larger total mass), and average only the values that agree with it
# (**disjoint mean**); then $\theta = \theta_{\text{pre}} + \lambda\,\tau_m$. Task arithmetic
# ($\theta_{\text{pre}} + \lambda\sum_t\tau_t$) is the same with all three steps off. Both get λ tuned on
# the same validation data, each on its own grid. The harness is `src/replikit/families/merging.py`, the
# method and its claims `src/replikit/methods/ties_merging.py`.

# %% tags=["parameters"]
profile = None  # smoke | default | full; None: params.yaml's `profile`
overrides = {}  # the method's parameters to change, e.g. {"k": 0.1}; validated
out_dir = None  # None: scratch/ties_merging (interactive runs never touch DVC's results/)

# %%
from replikit import claims, plots, results, sequential
from replikit.methods import load_config, ties_merging

cfg = load_config("ties_merging", profile=profile, overrides=overrides)
cfg

# %% [markdown]
# ## 1. Pretrain, fine-tune one encoder per task, merge subsets of 2, 4, 8 tasks

# %%
outcome, verdicts = sequential.replicate(ties_merging, cfg)
runs = outcome.runs
print(f"{runs['seed'].nunique()} seeds in {outcome.runtime_s:.0f} s on {outcome.device}")
runs.groupby("arm", sort=False).mean(numeric_only=True).drop(columns="seed").round(4)

# %% [markdown]
# ## 2. Where TIES stands: task count and trim fraction
# Left: mean test accuracy of the merged model (λ chosen on validation) against the number of merged
# tasks. Right: TIES' test accuracy against the trim fraction k (k = 1 keeps every entry: only the
# sign election and the disjoint mean act), one line per task count; dashed: task arithmetic.

# %%
n_cols = [c for c in runs.columns if c.startswith("acc_n")]
by_n = runs.melt(id_vars=["arm", "seed"], value_vars=n_cols, var_name="n", value_name="test accuracy")
by_n["tasks merged"] = by_n["n"].str[5:].astype(int)
sweep = outcome.extras["sweep"]
chosen = sweep[sweep["chosen"]]
fig_sweep, axes = plots.plt.subplots(1, 2, figsize=(12, 4), layout="constrained")
plots.sns.lineplot(
    by_n,
    x="tasks merged",
    y="test accuracy",
    hue="arm",
    marker="o",
    ax=axes[0],
    errorbar=plots.t95,
    palette=plots.arm_palette(list(dict.fromkeys(runs["arm"]))),
)
axes[0].set(title="Merged model vs number of tasks", xticks=cfg.task_counts)
axes[0].legend(loc="upper center", bbox_to_anchor=(0.5, -0.17), ncol=3, fontsize=8)
ties_k = chosen[chosen["method"] == "ties"]
count_colors = dict(zip(cfg.task_counts, plots.sns.color_palette("viridis", len(cfg.task_counts))))
plots.sns.lineplot(
    ties_k,
    x="k",
    y="test_acc",
    hue="n_tasks",
    marker="o",
    ax=axes[1],
    errorbar=plots.t95,
    palette=count_colors,
)
ta_chosen = chosen[chosen["method"] == "task_arithmetic"].groupby("n_tasks")["test_acc"].mean()
for n, acc in ta_chosen.items():
    axes[1].axhline(acc, ls="--", color=count_colors[n], lw=1, label=f"task arithmetic, {n} tasks")
axes[1].set(
    xscale="log",
    title="TIES vs trim fraction k",
    xlabel="k (fraction kept, log scale)",
    ylabel="test accuracy",
)
axes[1].legend(fontsize=7, title="tasks merged", title_fontsize=8)

# %% [markdown]
# ## 3. Validation accuracy against λ
# What λ is chosen from: task arithmetic sums the vectors (small λ), TIES averages them (λ near 1).

# %%
curve = sweep[(sweep["method"] == "task_arithmetic") | (sweep["k"] == cfg.k)].assign(
    merge=lambda d: d["method"].map({"task_arithmetic": "task arithmetic", "ties": f"TIES (k={cfg.k})"})
)
fig_lambda, axes = plots.plt.subplots(
    1, len(cfg.task_counts), figsize=(4.2 * len(cfg.task_counts), 3.6), sharey=True, layout="constrained"
)
for ax, n in zip(axes, cfg.task_counts):
    plots.sns.lineplot(
        curve[curve["n_tasks"] == n], x="coef", y="val_acc", hue="merge", ax=ax, errorbar=plots.t95
    )
    ax.set(title=f"{n} tasks merged", xlabel="λ (scaling coefficient)", ylabel="validation accuracy")

# %% [markdown]
# ## 4. Verdict
# Declared in `ties_merging.CLAIMS` before the runs: TIES (k = 0.2) beats task arithmetic when all
# tasks are merged, and its margin is larger with the most tasks than with the fewest.

# %%
fig_paired, axes = plots.plt.subplots(1, 2, figsize=(10, 3.8), layout="constrained")
plots.paired_effects(
    runs, "acc_all", ["task_arithmetic", "ties"], ax=axes[0], title=f"{max(cfg.task_counts)} tasks merged"
)
margins = (
    by_n[by_n["arm"] == "ties"].set_index(["seed", "tasks merged"])["test accuracy"]
    - by_n[by_n["arm"] == "task_arithmetic"].set_index(["seed", "tasks merged"])["test accuracy"]
)
plots.sns.pointplot(
    margins.rename("TIES - task arithmetic").reset_index(),
    x="tasks merged",
    y="TIES - task arithmetic",
    ax=axes[1],
    errorbar=plots.t95,
)
axes[1].axhline(0, color="0.4", lw=1)
axes[1].set(title="TIES margin per seed (mean, 95% CI)", ylabel="test accuracy difference")
claims.table(verdicts)

# %%
saved = results.save(
    "ties_merging",
    cfg,
    outcome,
    verdicts,
    figures={"task_count_and_k": fig_sweep, "lambda_curves": fig_lambda, "paired": fig_paired},
    out_dir=out_dir,
)
print("saved to", saved)
