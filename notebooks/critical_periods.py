# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Critical Learning Periods Emerge Even in Deep Linear Networks
# Kleinman, Achille, Soatto (ICLR 2024).
#
# > *"We show that critical periods depend on the depth of the model and structure of the data
# > distribution. We also show analytically and in simulations that the learning of features is tied to
# > competition between sources."*
#
# Two pathways, each a product of `depth` matrices from a small init, read two noisy views of one latent
# and their outputs are summed. A deficit stops pathway B from learning (the reference code's gate; or,
# with `deficit: zero`, removes source B) for the first steps; then normal training continues. We measure
# B's final share of the end-to-end map against the no-deficit control, per depth. The model, the deficit
# schedule, the share measure and the claims live in `src/replikit/methods/critical_periods.py`; this
# notebook runs, shows and judges.

# %% tags=["parameters"]
profile = None  # smoke | default | full; None: params.yaml's `profile`
overrides = {}  # the method's parameters to change, e.g. {"deficit": "zero"}; validated
out_dir = None  # None: scratch/critical_periods (interactive runs never touch DVC's results/)

# %%
from replikit import claims, plots, results, sequential
from replikit.methods import critical_periods, load_config

cfg = load_config("critical_periods", profile=profile, overrides=overrides)
cfg

# %% [markdown]
# ## 1. Train every condition at every depth, seed by seed
# Conditions: `control` (no deficit), `early_short` and `early_long` (deficit from step 0), `late` (the long
# deficit, after the control has converged), and `solo_control` / `solo_early_long` (source A silenced
# throughout: no competitor). Seeds are added in batches while a claim is undecided.

# %%
outcome, verdicts = sequential.replicate(critical_periods, cfg)
runs = outcome.runs
print(f"{len(runs)} runs in {outcome.runtime_s:.0f} s on {outcome.device}")
runs.pivot_table(index="depth", columns="condition", values="deprived_share", aggfunc=["mean", "std"]).round(
    3
)

# %% [markdown]
# ## 2. Lasting harm against deficit length, per depth
# Final share of the deprived pathway B (1/2 = both pathways carry the map equally) after no deficit, a
# short and a long early deficit; the late deficit is marked separately (mean over seeds, 95% band).

# %%
lengths = {"control": 0, "early_short": cfg.short_deficit, "early_long": cfg.long_deficit}
early = runs[runs["condition"].isin(list(lengths))].assign(deficit_steps=runs["condition"].map(lengths))
fig_length, ax = plots.plt.subplots(figsize=(6, 4))
plots.sns.lineplot(
    early,
    x="deficit_steps",
    y="deprived_share",
    hue="depth",
    marker="o",
    errorbar=plots.t95,
    palette="viridis",
    ax=ax,
)
late = runs[runs["condition"] == "late"].groupby("depth")["deprived_share"].mean()
ax.scatter(
    [cfg.long_deficit] * len(late),
    late.values,
    marker="x",
    color="k",
    zorder=3,
    label=f"late deficit (from step {cfg.late_start})",
)
ax.axhline(0.5, color="0.6", lw=1, ls="--")
ax.set(
    title="Deprived pathway's final share",
    xlabel="early deficit length (steps)",
    ylabel="final share of pathway B",
    ylim=(-0.02, 0.6),
)
ax.legend(title="depth", fontsize=8)

# %% [markdown]
# ## 3. Share trajectories during training
# Pathway B's share over training for the shallowest and deepest depths (deficits shaded); solo arms have
# no share (A is silent).

# %%
shown = sorted({min(cfg.depths), max(cfg.depths)})
hist = outcome.history[
    outcome.history["depth"].isin(shown) & ~outcome.history["condition"].str.startswith("solo")
]
fig_traj, axes = plots.plt.subplots(
    1, len(shown), figsize=(5.5 * len(shown), 3.8), sharey=True, squeeze=False
)
for ax, depth in zip(axes[0], shown):
    plots.sns.lineplot(
        hist[hist["depth"] == depth],
        x="step",
        y="deprived_share",
        hue="condition",
        errorbar=plots.t95,
        ax=ax,
        palette=plots.arm_palette(list(lengths) + ["late"]),
    )
    ax.axvspan(0, cfg.long_deficit, color="0.85", zorder=0)
    ax.axvspan(cfg.late_start, cfg.late_start + cfg.long_deficit, color="0.92", zorder=0)
    ax.set(title=f"depth {depth}", xlabel="gradient step", ylabel="share of pathway B", ylim=(-0.02, 0.6))

# %% [markdown]
# ## 4. Competition: the same deficit without a competing source
# What pathway B learned of its own least-squares map, with the competitor (A active) and without it
# (A silenced), after no deficit and after the long early deficit.

# %%
fig_comp, ax = plots.plt.subplots(figsize=(6, 3.8))
plots.sns.barplot(
    runs[runs["condition"].isin(["control", "early_long", "solo_control", "solo_early_long"])],
    x="depth",
    y="deprived_gain",
    hue="condition",
    errorbar=plots.t95,
    ax=ax,
)
ax.set(title="What the deprived pathway learned", ylabel="gain of pathway B (1 = its own optimum)")
ax.legend(fontsize=8)

# %% [markdown]
# ## 5. Verdict
# Declared in `critical_periods.CLAIMS` before the final runs, each with its smallest effect of interest
# (delta) and why: a long early deficit leaves a lasting loss at depth 4; depth 1 recovers (non-inferiority);
# the lasting loss grows with depth (slope per seed); a late deficit does no lasting harm (non-inferiority);
# without a competing source the same deficit does no lasting harm (competition).

# %%
claims.table(verdicts)

# %%
saved = results.save(
    "critical_periods",
    cfg,
    outcome,
    verdicts,
    figures={"share_vs_length": fig_length, "trajectories": fig_traj, "competition": fig_comp},
    out_dir=out_dir,
)
print("saved to", saved)
