# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Scaling Laws for Downstream Task Performance of Large Language Models
# Isik, Ponomareva, Hazimeh, Paparas, Vassilvitskii, Koyejo (2024).
#
# > *"With sufficient alignment, both downstream cross-entropy and BLEU score improve monotonically with
# > more pretraining data. In such cases, we show that it is possible to predict the downstream BLEU
# > score with good accuracy using a log-law. However, there are also cases where moderate misalignment
# > causes the BLEU score to fluctuate or get worse with more pretraining, whereas downstream
# > cross-entropy monotonically improves."*
#
# Procedural languages stand in for the paper's corpora: the downstream task is an order-2 Markov
# chain; pretraining data come from a mixture of it (aligned arm: the chain itself) with a chain that
# has the same grammar but different preferences (misaligned arm). A small next-token MLP is pretrained
# on each size $D_p$, fine-tuned on a fixed downstream set and scored exactly against the true chain:
# cross-entropy, and **next-token accuracy as a stand-in for BLEU** (a score of the decoded output).
# The log law $f(D_p) = (\log(A\,D_p^{\alpha}))^{\beta}$ is fit on the smaller sizes and predicts the
# larger ones. Logic and claims: `src/replikit/methods/downstream_scaling.py`.

# %% tags=["parameters"]
profile = None  # smoke | default | full; None: params.yaml's `profile`
overrides = {}  # the method's parameters to change, e.g. {"misaligned_alignment": 0.5}; validated
out_dir = None  # None: scratch/downstream_scaling (interactive runs never touch DVC's results/)

# %%
from replikit import claims, plots, results, sequential
from replikit.methods import downstream_scaling, load_config

cfg = load_config("downstream_scaling", profile=profile, overrides=overrides)
cfg

# %% [markdown]
# ## 1. Pretrain on each size, fine-tune, score (aligned and misaligned pretraining, seed by seed)

# %%
outcome, verdicts = sequential.replicate(downstream_scaling, cfg)
print(f"{len(outcome.runs)} (arm, seed) scaling curves in {outcome.runtime_s:.0f} s on {outcome.device}")
outcome.runs.groupby("arm")[
    [
        "ce_monotonicity",
        "metric_monotonicity",
        "law_error",
        "metric_gain_late",
        "acc_scratch",
        "acc_max_size",
        "ce_max_size",
    ]
].agg(["mean", "std"])

# %% [markdown]
# ## 2. Downstream metric and cross-entropy against pretraining size
# Mean over seeds with 95% bands; dashed: the log law fit on the `n_fit` smallest sizes (mean of the
# per-seed fits), extrapolated to the larger ones (right of the dotted line). Dotted horizontal lines:
# fine-tuning without pretraining; dash-dotted: the best accuracy any model can reach on the chain.

# %%
curves = outcome.history[outcome.history["pretrain_tokens"] > 0]
scratch = outcome.history[outcome.history["pretrain_tokens"] == 0].groupby("arm")[["acc", "ce"]].mean()
pal = plots.arm_palette(downstream_scaling.ARMS)
fit_edge = cfg.pretrain_tokens[cfg.n_fit - 1]
fig_scaling, axes = plots.plt.subplots(1, 2, figsize=(11.5, 4.2))
for metric, ax, label in (
    ("acc", axes[0], "next-token accuracy (BLEU stand-in)"),
    ("ce", axes[1], "downstream cross-entropy (nats/token)"),
):
    plots.sns.lineplot(
        curves, x="pretrain_tokens", y=metric, hue="arm", marker="o", errorbar=plots.t95, palette=pal, ax=ax
    )
    for arm in downstream_scaling.ARMS:
        ax.axhline(scratch.loc[arm, metric], color=pal[arm], ls=":", lw=1)
    if metric == "acc":
        law = curves.groupby(["arm", "pretrain_tokens"], as_index=False)["law_pred"].mean()
        for arm, part in law.groupby("arm"):
            ax.plot(
                part["pretrain_tokens"], part["law_pred"], ls="--", color=pal[arm], label=f"{arm}: log law"
            )
        if curves["bayes_acc"].notna().any():
            ax.axhline(curves["bayes_acc"].mean(), color="k", ls="-.", lw=1, label="Bayes accuracy (mean)")
        ax.legend(fontsize=8)
    ax.axvline(fit_edge, color="0.5", ls=":", lw=1)
    ax.set_xscale("log", base=2)
    ax.set(
        xlabel="pretraining tokens $D_p$", ylabel=label, title=label.split(" (")[0] + " vs pretraining size"
    )

# %% [markdown]
# ## 3. Per-seed curves of the misaligned arm
# The claim is about what can happen under misalignment: each seed's accuracy and cross-entropy.

# %%
fig_seeds, axes = plots.plt.subplots(1, 2, figsize=(11.5, 3.8))
mis = curves[curves["arm"] == "misaligned"]
for metric, ax in (("acc", axes[0]), ("ce", axes[1])):
    plots.sns.lineplot(
        mis,
        x="pretrain_tokens",
        y=metric,
        units="seed",
        estimator=None,
        lw=0.8,
        alpha=0.7,
        color=pal["misaligned"],
        ax=ax,
    )
    ax.set_xscale("log", base=2)
    ax.set(xlabel="pretraining tokens $D_p$", ylabel=metric, title=f"Misaligned arm, each seed: {metric}")

# %% [markdown]
# ## 4. Verdict
# Declared in `downstream_scaling.CLAIMS` before the final runs: monotonicity (per-seed Spearman
# correlation with $D_p$, whole CI above 0.9) of cross-entropy and accuracy in the aligned arm; the log
# law's prediction error on the held-out larger sizes (whole CI under 2 accuracy points) and its gain over
# the better naive forecaster (persistence, or a line in raw $D_p$; at least 0.5 points); monotone
# cross-entropy in the misaligned arm; and the misaligned accuracy *not* improving monotonically
# (1 - Spearman at least 0.5: it fluctuates or gets worse), judged on the misaligned arm alone.

# %%
fig_paired, axes = plots.plt.subplots(1, 2, figsize=(10, 3.8), layout="constrained")
stat = downstream_scaling.misaligned_non_monotonicity(outcome.runs).rename("1 - Spearman").reset_index()
plots.sns.stripplot(stat, y="1 - Spearman", ax=axes[0], size=7, color=pal["misaligned"])
axes[0].axhline(0.5, color="0.4", ls="--", lw=1)
axes[0].set(title="Misaligned accuracy vs $D_p$, per seed (delta dashed)", ylim=(-0.05, 2.05))
aligned = outcome.runs[outcome.runs["arm"] == "aligned"]
errors = aligned.melt(
    id_vars="seed",
    value_vars=["law_error", "persistence_error", "linear_error"],
    var_name="forecaster",
    value_name="mean absolute error",
)
plots.sns.pointplot(errors, x="forecaster", y="mean absolute error", errorbar=plots.t95, ax=axes[1])
axes[1].set(title="Aligned arm: prediction error on the larger sizes", yscale="log")
claims.table(verdicts)

# %%
saved = results.save(
    "downstream_scaling",
    cfg,
    outcome,
    verdicts,
    figures={"scaling": fig_scaling, "misaligned_seeds": fig_seeds, "paired": fig_paired},
    out_dir=out_dir,
)
print("saved to", saved)
