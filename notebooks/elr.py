# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # ELR: Early-Learning Regularization Prevents Memorization of Noisy Labels
# Liu, Niles-Weed, Razavian, Fernandez-Granda (NeurIPS 2020).
#
# > *"We take a different route and instead capitalize on early learning via regularization [...]
# > The resulting framework is shown to provide robustness to noisy annotations on several standard
# > benchmarks."*
#
# Networks trained on noisy labels first fit the clean ones (early learning), then memorize the false
# ones. ELR keeps a running average of each example's predictions and penalises
# $\lambda \log(1 - \langle p_i, t_i \rangle)$, pulling the network back towards what it predicted early.
# The algorithm and the claims live in `src/replikit/methods/elr.py`; this notebook runs, shows and judges.

# %% tags=["parameters"]
profile = None  # smoke | default | full; None: params.yaml's `profile`
overrides = {}  # the method's parameters to change, e.g. {"noise_rate": 0.6}; validated
out_dir = None  # None: scratch/elr (interactive runs never touch DVC's results/)

# %%
from replikit import claims, plots, results, sequential
from replikit.methods import elr, load_config

cfg = load_config("elr", profile=profile, overrides=overrides)
cfg

# %% [markdown]
# ## 1. Train cross-entropy (`ce`) and ELR (`elr`) on the same noisy labels, seed by seed

# %%
outcome, verdicts = sequential.replicate(elr, cfg)
print(f"{len(outcome.runs)} runs in {outcome.runtime_s:.0f} s on {outcome.device}")
outcome.runs.groupby("arm")[["final_test_acc", "best_test_acc", "best_epoch", "memorized"]].agg(
    ["mean", "std"]
)

# %% [markdown]
# ## 2. Early learning, then memorization
# Clean test accuracy per epoch, and the fraction of *wrongly labelled* training examples the network
# predicts with their wrong label, every 5 epochs (mean over seeds, 95% band).

# %%
main = outcome.history[outcome.history["noise_rate"] == cfg.noise_rate]
fig_curves, axes = plots.plt.subplots(1, 2, figsize=(11, 3.8))
plots.curves(
    main, "test_acc", ax=axes[0], title=f"Clean test accuracy, {cfg.noise_rate:.0%} noise", ylabel="accuracy"
)
plots.curves(
    main.dropna(subset=["memorized"]),
    "memorized",
    ax=axes[1],
    title="Wrong labels memorized",
    ylabel="fraction of noisy examples",
)

# %% [markdown]
# ## 3. Final accuracy across noise rates

# %%
fig_sweep, ax = plots.plt.subplots(figsize=(5.5, 3.8))
sweep = outcome.extras["sweep"]
if len(sweep):
    plots.sns.lineplot(
        sweep,
        x="noise_rate",
        y="final_test_acc",
        hue="arm",
        marker="o",
        ax=ax,
        palette=plots.arm_palette(["ce", "elr"]),
    )
    ax.set(
        title="Final clean test accuracy vs noise rate",
        xlabel="symmetric noise rate (redraw probability)",
        ylabel="final clean test accuracy",
    )

# %% [markdown]
# ## 4. Verdict
# Declared in `elr.CLAIMS` before the runs: ELR's final accuracy against CE's final accuracy
# (threshold: 2 points), and against CE stopped at its best test epoch (an oracle CE cannot have).

# %%
fig_paired, axes = plots.plt.subplots(1, 2, figsize=(9, 3.6))
plots.paired_effects(outcome.runs, "final_test_acc", ["ce", "elr"], ax=axes[0], title="Final epoch")
plots.paired_effects(
    outcome.runs.assign(
        best_or_final=outcome.runs["best_test_acc"].where(
            outcome.runs["arm"] == "ce", outcome.runs["final_test_acc"]
        )
    ),
    "best_or_final",
    ["ce", "elr"],
    ax=axes[1],
    title="CE at its best epoch, ELR final",
)
claims.table(verdicts)

# %%
saved = results.save(
    "elr",
    cfg,
    outcome,
    verdicts,
    figures={"curves": fig_curves, "noise_sweep": fig_sweep, "paired": fig_paired},
    out_dir=out_dir,
)
print("saved to", saved)
