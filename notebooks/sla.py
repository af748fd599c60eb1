# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # SLA: Self-supervised Label Augmentation via Input Transformations
# Lee, Hwang, Shin (ICML 2020).
#
# > *"We show that such a technique can be used to significantly improve the model accuracy even under
# > fully-labeled datasets. [...] we augment original labels via self-supervision of input
# > transformation. [...] It also enables an aggregated inference which combines the predictions from
# > different augmentations to improve the prediction accuracy."*
#
# Every training image is shown in its 4 rotations with the **joint label** (class, rotation): one
# softmax over 10 x 4 = 40 labels. At test time **SLA+SI** reads the class from the joint logits of the
# unrotated input, **SLA+AG** averages, over the 4 rotated copies, the logit of the class *with the
# rotation actually applied*. Baselines: the plain classifier (`baseline`, no rotations: SLA switched
# off), data augmentation with rotations (`da`: same label for every rotation, so rotation invariance
# is forced) and multi-task learning (`mt`: a class head and a rotation head).
# Algorithm and claims: `src/replikit/methods/sla.py`; rotation utilities: `src/replikit/families/rotation.py`.

# %% tags=["parameters"]
profile = None  # smoke | default | full; None: params.yaml's `profile`
overrides = {}  # the method's parameters to change, e.g. {"label_fraction": 0.2}; validated
out_dir = None  # None: scratch/sla (interactive runs never touch DVC's results/)

# %%
from replikit import claims, plots, results, sequential
from replikit.methods import load_config, sla

cfg = load_config("sla", profile=profile, overrides=overrides)
cfg

# %% [markdown]
# ## 1. Train every objective on the same images, seed by seed
# `acc`: single inference on the unrotated input (SLA+SI for `sla`). `acc_ag`: aggregated over the 4
# rotations (SLA+AG for `sla`; for `da`/`mt` a plain test-time average of class logits, a control).
# `_few` arms: only `label_fraction` of the training labels.

# %%
outcome, verdicts = sequential.replicate(sla, cfg)
print(f"{len(outcome.runs)} runs in {outcome.runtime_s:.0f} s on {outcome.device}")
outcome.runs.groupby("arm", sort=False)[["n_labels", "acc", "acc_ag"]].agg(["mean", "std"]).round(4)

# %% [markdown]
# ## 2. Learning curves (evaluation accuracy per epoch, mean over seeds, 95% band)

# %%
fig_curves, axes = plots.plt.subplots(1, 2, figsize=(11, 3.8), sharey=True)
full = outcome.history[outcome.history["setting"] == "full"]
palette = plots.arm_palette(list(sla.ARMS))  # one colour per objective in every panel
for ax, col, title in (
    (axes[0], "acc", "Full labels: single inference"),
    (axes[1], "acc_ag", "Full labels: aggregated over 4 rotations"),
):
    plots.sns.lineplot(
        full.dropna(subset=[col]), x="epoch", y=col, hue="arm", errorbar=plots.t95, ax=ax, palette=palette
    )
    ax.set(title=title, ylabel="test accuracy", ylim=(max(0.5, full["acc"].quantile(0.1) - 0.05), 1.0))

# %% [markdown]
# ## 3. Final accuracy per objective and inference
# Each dot is one seed; the paper's ordering on CIFAR is DA < baseline < SLA+SI < SLA+AG.

# %%
long = outcome.runs.melt(
    id_vars=["arm", "seed", "setting"],
    value_vars=["acc", "acc_ag"],
    var_name="inference",
    value_name="accuracy",
).dropna()
long["inference"] = long["inference"].map({"acc": "single", "acc_ag": "aggregated"})
fig_final, axes = plots.plt.subplots(1, 2, figsize=(11, 3.8), width_ratios=[2, 1])
for ax, setting, title in (
    (axes[0], "full", "All labels"),
    (axes[1], "few", f"{cfg.label_fraction:.0%} of the labels"),
):
    part = long[long["setting"] == setting]
    if len(part):
        plots.sns.stripplot(
            part, x="arm", y="accuracy", hue="inference", dodge=True, ax=ax, alpha=0.6, size=4
        )
        plots.sns.pointplot(
            part,
            x="arm",
            y="accuracy",
            hue="inference",
            dodge=0.4,
            linestyle="none",
            errorbar=plots.t95,
            markers="D",
            ax=ax,
            legend=False,
            palette="dark",
        )
    ax.set(title=title, xlabel="objective", ylabel="test accuracy")

# %% [markdown]
# ## 4. Verdict
# Declared in `sla.CLAIMS` before the runs: SLA+AG beats the baseline (full labels) and MT; DA (forced
# invariance) is below the baseline; SLA+SI is not worse than the baseline by more than 1 point; SLA+AG
# beats the baseline with reduced labels. Effects are paired by seed (same init, same batches).

# %%
fig_paired, axes = plots.plt.subplots(1, 3, figsize=(13, 3.6), layout="constrained")
paired = outcome.runs.assign(
    sla_ag_or_acc=outcome.runs["acc_ag"].where(outcome.runs["objective"] == "sla", outcome.runs["acc"])
)
plots.paired_effects(
    paired[paired["setting"] == "full"],
    "sla_ag_or_acc",
    [a for a in ("da", "mt", "baseline", "sla") if a in cfg.arms],
    ax=axes[0],
    title="Full labels (SLA: +AG; others: single)",
)
plots.paired_effects(
    outcome.runs[outcome.runs["setting"] == "full"],
    "acc",
    [a for a in ("baseline", "sla") if a in cfg.arms],
    ax=axes[1],
    title="SLA+SI vs baseline",
)
if cfg.label_fraction > 0:
    plots.paired_effects(
        paired[paired["setting"] == "few"],
        "sla_ag_or_acc",
        ["baseline_few", "sla_few"],
        ax=axes[2],
        title="Reduced labels (SLA: +AG)",
    )
for ax in axes:
    ax.set_ylabel("test accuracy")
claims.table(verdicts)

# %%
saved = results.save(
    "sla",
    cfg,
    outcome,
    verdicts,
    figures={"curves": fig_curves, "final_accuracy": fig_final, "paired": fig_paired},
    out_dir=out_dir,
)
print("saved to", saved)
