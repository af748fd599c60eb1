# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Model soups: averaging weights of multiple fine-tuned models improves accuracy without increasing inference time
# Wortsman, Ilharco, Gadre, Roelofs, Gontijo-Lopes, Morcos, Namkoong, Farhadi, Carmon, Kornblith, Schmidt (ICML 2022).
#
# > *"We show that averaging the weights of multiple models fine-tuned with different hyperparameter
# > configurations often improves accuracy and robustness. [...] our soup recipe provides significant
# > improvements over the best model in a hyperparameter sweep on ImageNet."*
#
# One pretrained model, a sweep of fine-tunes (learning rate x seed), then: the best single model on
# validation, the uniform soup (average of all weights) and the greedy soup (Recipe 1: add an
# ingredient only if validation accuracy does not drop). A soup costs one model at inference; the logit
# ensemble (k forward passes) is shown for reference. The algorithm lives in `src/replikit/soups.py`,
# the setup and the claims in `src/replikit/methods/model_soups.py`.

# %% tags=["parameters"]
profile = None  # smoke | default | full; None: params.yaml's `profile`
overrides = {}  # the method's parameters to change, e.g. {"ft_lrs": [1e-3, 3e-3]}; validated
out_dir = None  # None: scratch/model_soups (interactive runs never touch DVC's results/)

# %%
from replikit import claims, plots, results, sequential
from replikit.methods import load_config, model_soups

cfg = load_config("model_soups", profile=profile, overrides=overrides)
cfg

# %% [markdown]
# ## 1. Pretrain, fine-tune the sweep, cook the soups (seed by seed)

# %%
outcome, verdicts = sequential.replicate(model_soups, cfg)
print(f"{outcome.runs['seed'].nunique()} seeds in {outcome.runtime_s:.0f} s on {outcome.device}")
outcome.runs.groupby("arm", sort=False)[["val_acc", "test_acc", "shift_acc", "n_ingredients"]].agg(
    ["mean", "std"]
)

# %% [markdown]
# ## 2. The ingredients and the soups (first seed)
# Each fine-tuned ingredient (colour: learning rate, marker: fine-tuned with augmentation or not), the
# pretrained starting point (pretrained features + linear-probe head) and the soups, in
# test accuracy (x) and shifted-test accuracy (y): the paper's Figure 1 in miniature.

# %%
first = outcome.runs["seed"].min()
ing = outcome.history[outcome.history["seed"] == first]
arms = outcome.runs[outcome.runs["seed"] == first].set_index("arm")
fig_sweep, ax = plots.plt.subplots(figsize=(6.2, 4.4))
plots.sns.scatterplot(
    ing, x="test_acc", y="shift_acc", hue="lr", style="augment", palette="viridis", s=45, ax=ax, legend="full"
)
for arm, marker in (("pretrained", "s"), ("uniform_soup", "P"), ("greedy_soup", "*"), ("ensemble", "X")):
    ax.scatter(
        arms.loc[arm, "test_acc"],
        arms.loc[arm, "shift_acc"],
        marker=marker,
        s=140,
        color="k",
        label=arm,
        zorder=3,
        facecolors="none" if arm == "pretrained" else "k",
    )
ax.set(
    title=f"Fine-tuning sweep and soups (seed {first})",
    xlabel="test accuracy",
    ylabel="shifted-test accuracy",
)
ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), title="ingredients (lr, augment) / arms")

# %% [markdown]
# ## 3. Accuracy of each arm, in distribution and under shift (mean over seeds, 95% CI)

# %%
long = outcome.runs.melt(
    id_vars=["arm", "seed"], value_vars=["test_acc", "shift_acc"], var_name="test set", value_name="accuracy"
)
fig_arms, ax = plots.plt.subplots(figsize=(8, 3.8))
plots.sns.pointplot(
    long, x="arm", y="accuracy", hue="test set", errorbar=plots.t95, dodge=0.3, linestyle="none", ax=ax
)
ax.set(title="Accuracy by arm (soups and best single: one model at inference)", xlabel="")

# %% [markdown]
# ## 4. Verdict
# Declared in `model_soups.CLAIMS` before the final runs: greedy soup against the best single model of
# the sweep (selected on validation), paired by seed, on the test set and on the shifted test set, and
# whether the gain is larger under shift.

# %%
fig_paired, axes = plots.plt.subplots(1, 2, figsize=(10, 3.8))
compare = ["best_single", "uniform_soup", "greedy_soup"]
plots.paired_effects(outcome.runs, "test_acc", compare, ax=axes[0], title="Test accuracy per seed")
plots.paired_effects(outcome.runs, "shift_acc", compare, ax=axes[1], title="Shifted-test accuracy per seed")
claims.table(verdicts)

# %%
saved = results.save(
    "model_soups",
    cfg,
    outcome,
    verdicts,
    figures={"sweep": fig_sweep, "arms": fig_arms, "paired": fig_paired},
    out_dir=out_dir,
)
print("saved to", saved)
