# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Deep Learning on a Data Diet: Finding Important Examples Early in Training
# Paul, Ganguli, Dziugaite (NeurIPS 2021).
#
# > *"In this work, we make the striking observation that, in standard vision datasets, simple scores
# > averaged over several weight initializations can be used to identify important examples very early in
# > training. [...] In fact, using EL2N scores calculated a few epochs into training, we can prune half of
# > the CIFAR10 training set while slightly improving test accuracy."*
#
# Each training example gets a score, averaged over a few short runs from different initialisations:
# **EL2N** $= \lVert \mathrm{softmax}(f_w(x)) - y \rVert_2$ a few epochs in, and **GraNd**
# $= \lVert \nabla_w \ell(f_w(x), y) \rVert_2$ at initialisation or a few epochs in. Keeping only the
# highest-scoring fraction of the data, and training for the same number of steps as on the full data,
# is compared with a random subset of the same size, with an *offset* subset that skips the very hardest
# examples, and with the easiest examples (a sanity arm). The scores, the subsets and the claims live in
# `src/replikit/methods/data_diet.py`; this notebook runs, shows and judges.

# %% tags=["parameters"]
profile = None  # smoke | default | full; None: params.yaml's `profile`
overrides = {}  # the method's parameters to change, e.g. {"keep_fractions": [0.4, 0.6]}; validated
out_dir = None  # None: scratch/data_diet (interactive runs never touch DVC's results/)

# %%
from replikit import claims, plots, results, sequential
from replikit.methods import data_diet, load_config

cfg = load_config("data_diet", profile=profile, overrides=overrides)
cfg

# %% [markdown]
# ## 1. Score the training set, then train every subset for the full data's number of steps, seed by seed

# %%
outcome, verdicts = sequential.replicate(data_diet, cfg)
runs = outcome.runs
print(f"{len(runs)} runs in {outcome.runtime_s:.0f} s on {outcome.device}")
runs.groupby(["rule", "fraction"])[["test_acc", "val_acc", "n_kept"]].mean().unstack("rule")["test_acc"]

# %% [markdown]
# ## 2. Test accuracy against the fraction of the training set kept (the paper's main figure)
# Mean over seeds with 95% bands; the dashed line and grey band are the full data set.

# %%
fig_prune, ax = plots.plt.subplots(figsize=(6.5, 4.2))
pruned = runs[runs["rule"] != "full"]
full = runs.loc[runs["rule"] == "full", "test_acc"]
plots.sns.lineplot(
    pruned,
    x="fraction",
    y="test_acc",
    hue="rule",
    marker="o",
    errorbar=plots.t95,
    ax=ax,
    palette=plots.arm_palette(list(dict.fromkeys(pruned["rule"]))),
)
ax.axhline(full.mean(), color="0.3", ls="--", lw=1, label="full data")
ax.axhspan(full.mean() - 1.96 * full.sem(), full.mean() + 1.96 * full.sem(), color="0.85", zorder=0)
ax.set(
    xlabel="fraction of the training set kept",
    ylabel="test accuracy",
    title=f"Pruning by score, {cfg.epochs} full-data epochs of steps",
)
ax.legend(fontsize=8)

# %% [markdown]
# ## 3. How the scores relate
# Spearman rank correlation between the averaged scores of the training examples, per seed.

# %%
outcome.extras["score_correlations"].round(3)

# %% [markdown]
# ## 4. Verdict
# Declared in `data_diet.CLAIMS` before the confirmation runs: EL2N at half the data against the full data
# (non-inferiority) and against a random half; scores from the first epochs (EL2N, GraNd) against random
# subsets; the easiest examples against random ones (sanity).

# %%
fig_paired, axes = plots.plt.subplots(1, 2, figsize=(10, 3.6))
ran = set(runs["arm"])
plots.paired_effects(
    runs,
    "test_acc",
    [a for a in ("full", "el2n_50", "random_50") if a in ran],
    ax=axes[0],
    title="Half the data",
)
plots.paired_effects(
    runs,
    "test_acc",
    [a for a in ("random_50", "grand_early_50", "grand_init_50", "easy_50") if a in ran],
    ax=axes[1],
    title="Other scores at half the data",
)
claims.table(verdicts)

# %%
saved = results.save(
    "data_diet", cfg, outcome, verdicts, figures={"pruning": fig_prune, "paired": fig_paired}, out_dir=out_dir
)
print("saved to", saved)
