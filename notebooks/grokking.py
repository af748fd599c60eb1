# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Grokking as the Transition from Lazy to Rich Training Dynamics
# Kumar, Bordelon, Gershman, Pehlevan (ICLR 2024).
#
# > *"We find that the key determinants of grokking are the rate of feature learning -- which can be
# > controlled precisely by parameters that scale the network output -- and the alignment of the initial
# > features with the target function y(x)."*
#
# A two-layer network learns a quadratic of one direction of Gaussian inputs by full-batch gradient
# descent. Its output is centred at initialisation and multiplied by $\alpha$, with learning rate
# $\eta_0/\alpha^2$: large $\alpha$ starts lazy (close to its initial kernel), small $\alpha$ learns
# features at once. The **delay** is $\log_{10}(t_\text{test}/t_\text{train})$, the times at which each
# loss first falls to half its initial value; a run whose test loss never gets there is *censored*
# (its delay is only a lower bound). The algorithm, the censoring rule and the claims live in
# `src/replikit/methods/grokking.py`; this notebook runs, shows and judges.

# %% tags=["parameters"]
profile = None  # smoke | default | full; None: params.yaml's `profile`
overrides = {}  # the method's parameters to change, e.g. {"align_rho": 0.5}; validated
out_dir = None  # None: scratch/grokking (interactive runs never touch DVC's results/)

# %%
from replikit import claims, plots, results, sequential
from replikit.methods import grokking, load_config

cfg = load_config("grokking", profile=profile, overrides=overrides)
cfg

# %% [markdown]
# ## 1. Train every $\alpha$ (and the aligned target) from the same initialisation, seed by seed

# %%
outcome, verdicts = sequential.replicate(grokking, cfg)
runs = outcome.runs
print(f"{len(runs)} runs in {outcome.runtime_s:.0f} s on {outcome.device}")
runs.groupby("arm", sort=False)[["t_train", "t_test", "delay", "censored", "untrained"]].agg(
    ["mean", "sum"]
).drop(
    columns=[
        ("t_train", "sum"),
        ("t_test", "sum"),
        ("delay", "sum"),
        ("censored", "mean"),
        ("untrained", "mean"),
    ]
)

# %% [markdown]
# ## 2. Loss curves: the lazier the start, the longer the test loss lags the train loss
# Geometric mean over seeds with a 95% t-band (of log loss); log step axis. The dotted line is the level
# (half the initial loss).

# %%
hist = outcome.history.melt(
    id_vars=["arm", "seed", "alpha", "rho", "step"],
    value_vars=["train_loss", "test_loss"],
    var_name="split",
    value_name="loss",
)
hist = hist[hist["step"] > 0]
arms = list(dict.fromkeys(runs["arm"]))
fig_curves, axes = plots.plt.subplots(
    1, len(arms), figsize=(2.6 * len(arms), 3.2), sharey=True, squeeze=False
)
for ax, arm in zip(axes[0], arms):
    plots.band(
        hist[hist["arm"] == arm], x="step", y="loss", hue="split", ax=ax, log=True, legend=ax is axes[0][0]
    )
    ax.axhline(cfg.level * 0.5, color="0.4", ls=":", lw=1)
    ax.set(xscale="log", yscale="log", title=arm, xlabel="GD step")

# %% [markdown]
# ## 3. The delay against $\alpha$
# One point per seed; open triangles are censored runs, plotted at their lower bound. The aligned
# target at its $\alpha$ in red.

# %%
fig_delay, ax = plots.plt.subplots(figsize=(5.5, 3.8))
sweep = runs[runs["rho"] == 0]
plots.sns.lineplot(
    sweep, x="alpha", y="delay", errorbar=None, color="0.3", ax=ax, label="mean (censored at bound)"
)
for cens, marker in ((False, "o"), (True, "^")):
    part = sweep[sweep["censored"] == cens]
    ax.scatter(
        part["alpha"],
        part["delay"],
        marker=marker,
        facecolors="none" if cens else "C0",
        edgecolors="C0",
        label="censored" if cens else "observed",
        zorder=3,
    )
aligned = runs[runs["rho"] > 0]
if len(aligned):
    ax.scatter(
        aligned["alpha"] * 1.08,
        aligned["delay"],
        color="C3",
        marker="s",
        label=f"aligned, rho={cfg.align_rho:g}",
    )
ax.set(
    xscale="log",
    xlabel="output scale alpha (large = lazy)",
    ylabel="delay log10(t_test / t_train)",
    title="Grokking delay",
)
ax.legend(fontsize=8)

# %% [markdown]
# ## 4. Verdict
# Declared in `grokking.CLAIMS` before the final runs: the trend of the delay over $\alpha$ (censored
# Kendall's tau per seed), the delay at the richest $\alpha$ (within a factor 2 in time), and the
# aligned target's shorter delay at the same $\alpha$.

# %%
claims.table(verdicts)

# %%
saved = results.save(
    "grokking", cfg, outcome, verdicts, figures={"curves": fig_curves, "delay": fig_delay}, out_dir=out_dir
)
print("saved to", saved)
