# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # RotNet: Unsupervised Representation Learning by Predicting Image Rotations
# Gidaris, Singh, Komodakis (ICLR 2018).
#
# > *"We propose to learn image features by training ConvNets to recognize the 2d rotation that is
# > applied to the image that it gets as input. We demonstrate both qualitatively and quantitatively
# > that this apparently simple task actually provides a very powerful supervisory signal for semantic
# > feature learning."*
#
# Pretext: predict which of 0/90/180/270 degrees an unlabelled image was turned by. Then freeze the
# network and fit a linear probe on each block's features with k labels per class, or fine-tune the
# whole network from the pretext weights. `random_init` is the same network from the same seed without
# the pretext: frozen it gives the random-feature probe, trained on the labels it is training from
# scratch (with all labels: the supervised reference).
# Algorithm and claims: `src/replikit/methods/rotnet.py`; rotation utilities: `src/replikit/families/rotation.py`.

# %% tags=["parameters"]
profile = None  # smoke | default | full; None: params.yaml's `profile`
overrides = {}  # the method's parameters to change, e.g. {"probe_block": 1}; validated
out_dir = None  # None: scratch/rotnet (interactive runs never touch DVC's results/)

# %%
from replikit import claims, plots, results, sequential
from replikit.methods import load_config, rotnet

cfg = load_config("rotnet", profile=profile, overrides=overrides)
cfg

# %% [markdown]
# ## 1. Pretext, probes and fine-tuning, seed by seed

# %%
outcome, verdicts = sequential.replicate(rotnet, cfg)
print(f"{cfg.n_seeds} seeds in {outcome.runtime_s:.0f} s on {outcome.device}")
outcome.runs.groupby("arm").mean(numeric_only=True).drop(columns="seed").T.round(4)

# %% [markdown]
# ## 2. Is the pretext solved by a shortcut?
# Digits fill the frame vertically but not horizontally, so the *axis* of a rotation (0/180 vs 90/270)
# shows in where the ink is, without any notion of a digit. Below: a logistic regression on border or
# row/column ink predicting the rotation of held-out images (chance: 25%), and RotNet's accuracy split
# into the axis and the direction within the axis (the part no ink-position cue gives).

# %%
print(outcome.extras["shortcut"].round(3).to_string(index=False))
fig_pretext, ax = plots.plt.subplots(figsize=(6.5, 3.8))
pre = outcome.history.melt(
    id_vars=["epoch", "seed"],
    value_vars=["pretext_acc", "pretext_axis_acc", "pretext_dir_acc"],
    var_name="measure",
    value_name="accuracy",
)
pre["measure"] = pre["measure"].map(
    {
        "pretext_acc": "4-way rotation",
        "pretext_axis_acc": "axis (0/180 vs 90/270)",
        "pretext_dir_acc": "direction, given the right axis",
    }
)
plots.sns.lineplot(pre, x="epoch", y="accuracy", hue="measure", errorbar=plots.t95, ax=ax, marker="o")
for _, r in outcome.extras["shortcut"].iterrows():
    ax.axhline(r["rotation_acc"], ls="--", lw=1, color="0.4")
    ax.annotate(f"shortcut: {r['features']}", (1, r["rotation_acc"]), fontsize=8, va="bottom", color="0.3")
ax.axhline(0.25, ls=":", color="0.6")
ax.set(title="Pretext accuracy on held-out images", ylabel="rotation accuracy", ylim=(0, 1.02))

# %% [markdown]
# ## 3. Linear probes on every block, by labels per class
# Top: channel means of each block (`pooled`, where the ink is no longer given to the probe); bottom:
# the whole map, flattened (on 8x8 digits close to a re-coded image: random weights do as well).

# %%
probes = outcome.extras["probes"]
order = [s for s in ("5", "10", "20", "50", "100", "all") if s in set(probes["shots"])]
order += [s for s in sorted(set(probes["shots"])) if s not in order]
blocks = sorted(set(probes["block"]))
views = ["pooled", "map"]
fig_probes, axes = plots.plt.subplots(
    2, len(blocks), figsize=(4.2 * len(blocks), 7.4), sharey=True, squeeze=False, layout="constrained"
)
for r, view in enumerate(views):
    for c, b in enumerate(blocks):
        ax, part = axes[r][c], probes[(probes["block"] == b) & (probes["features"] == view)]
        if not len(part):
            ax.set_axis_off()
            ax.text(
                0.5,
                0.5,
                f"block {b}: 1x1 map\n(map = pooled)",
                ha="center",
                va="center",
                transform=ax.transAxes,
            )
            continue
        plots.sns.pointplot(
            part,
            x="shots",
            y="acc",
            hue="arm",
            order=order,
            errorbar=plots.t95,
            ax=ax,
            palette=plots.arm_palette(list(rotnet.ARMS)),
            dodge=0.2,
        )
        claimed = b == cfg.probe_block and view == cfg.probe_features
        ax.set(
            title=f"Block {b}, {view} features" + (" (claims)" if claimed else ""),
            xlabel="labels per class",
            ylabel="linear-probe test accuracy",
        )

# %% [markdown]
# ## 4. Few labels: probe and fine-tuning against training from scratch

# %%
long = outcome.runs.melt(
    id_vars=["arm", "seed"],
    value_vars=[c for c in outcome.runs if c.startswith(("paper_probe_acc_", "probe_acc_", "ft_acc_"))],
    var_name="what",
    value_name="accuracy",
).dropna()
long["shots"] = long["what"].str.rsplit("_", n=1).str[1]
long["model"] = (
    long["what"]
    .str.rsplit("_", n=1)
    .str[0]
    .map(
        {
            "ft_acc": "trained",
            "paper_probe_acc": "frozen + non-linear probe (paper)",
            "probe_acc": "frozen + linear probe (ours)",
        }
    )
    + " / "
    + long["arm"]
)
fig_few, ax = plots.plt.subplots(figsize=(7, 3.8))
plots.sns.pointplot(
    long, x="shots", y="accuracy", hue="model", order=order, errorbar=plots.t95, ax=ax, dodge=0.3
)
ax.set(
    title=f"Block {cfg.probe_block} probes vs whole-network training",
    xlabel="labels per class",
    ylabel="test accuracy",
)

# %% [markdown]
# ## 5. Verdict
# Declared in `rotnet.CLAIMS` before the runs, on the paper's probe (a non-linear classifier on the frozen
# block-2 map): the RotNet probe beats the random-feature probe by at least 3 points (all labels); it is
# within 4 points of the supervised network (non-inferiority); with 10 labels per class it beats the
# network trained on those labels from scratch by at least 2 points (nothing fine-tuned, as the paper).

# %%
fig_paired, axes = plots.plt.subplots(1, 3, figsize=(13, 3.6), layout="constrained")
plots.paired_effects(
    outcome.runs,
    "paper_probe_acc_all",
    ["random_init", "rotnet"],
    ax=axes[0],
    title="Paper's probe, all labels",
)
vs_sup = outcome.runs.assign(
    probe_or_supervised=outcome.runs["paper_probe_acc_all"].where(
        outcome.runs["arm"] == "rotnet", outcome.runs["ft_acc_all"]
    )
)
plots.paired_effects(
    vs_sup,
    "probe_or_supervised",
    ["random_init", "rotnet"],
    ax=axes[1],
    title="RotNet probe vs supervised (all labels)",
)
few = f"_{rotnet.CLAIM_SHOTS}"
vs_scratch = outcome.runs.assign(
    probe_or_scratch=outcome.runs["paper_probe_acc" + few].where(
        outcome.runs["arm"] == "rotnet", outcome.runs["ft_acc" + few]
    )
)
plots.paired_effects(
    vs_scratch,
    "probe_or_scratch",
    ["random_init", "rotnet"],
    ax=axes[2],
    title=f"Paper's probe vs scratch, {rotnet.CLAIM_SHOTS}/class",
)
axes[1].set_xticks([0, 1], ["supervised\n(random_init trained)", "rotnet\n(frozen + probe)"])
for ax in axes:
    ax.set_ylabel("test accuracy")
claims.table(verdicts)

# %%
saved = results.save(
    "rotnet",
    cfg,
    outcome,
    verdicts,
    figures={"pretext": fig_pretext, "probes": fig_probes, "few_labels": fig_few, "paired": fig_paired},
    out_dir=out_dir,
)
print("saved to", saved)
