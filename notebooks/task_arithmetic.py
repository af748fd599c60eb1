# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Task Arithmetic: Editing Models with Task Arithmetic
# Ilharco, Ribeiro, Wortsman, Gururangan, Schmidt, Hajishirzi, Farhadi (ICLR 2023).
#
# > *"Negating a task vector decreases performance on the target task, with little change in model
# > behavior on control tasks. Moreover, adding task vectors together can improve performance on
# > multiple tasks at once."*
#
# A task vector is $\tau_t = \theta_{\text{ft}(t)} - \theta_{\text{pre}}$. Addition builds one model
# $\theta_{\text{pre}} + \lambda \sum_t \tau_t$ for all tasks; negation $\theta_{\text{pre}} - \lambda\tau_t$ forgets
# task $t$. Each task keeps its own frozen head; $\lambda$ is chosen on validation data carved from
# training data. The apparatus is `src/replikit/families/merging.py`, the method and its claims
# `src/replikit/methods/task_arithmetic.py`; this notebook runs, shows and judges.

# %% tags=["parameters"]
profile = None  # smoke | default | full; None: params.yaml's `profile`
overrides = {}  # the method's parameters to change, e.g. {"n_tasks": 4}; validated
out_dir = None  # None: scratch/task_arithmetic (interactive runs never touch DVC's results/)

# %%
from replikit import claims, plots, results, sequential
from replikit.methods import load_config, task_arithmetic

cfg = load_config("task_arithmetic", profile=profile, overrides=overrides)
cfg

# %% [markdown]
# ## 1. Pretrain, fit frozen heads, fine-tune one encoder per task; add and negate task vectors

# %%
outcome, verdicts = sequential.replicate(task_arithmetic, cfg)
print(f"{outcome.runs['seed'].nunique()} seeds in {outcome.runtime_s:.0f} s on {outcome.device}")
outcome.runs.groupby("arm").mean(numeric_only=True).drop(columns="seed").round(4)

# %% [markdown]
# Per task (test accuracy, mean over seeds): pretrained encoder, its own fine-tuned encoder, the
# single model from adding all task vectors, and (targets only) the model with the task negated.

# %%
per_task = outcome.extras["per_task"]
per_task.drop(columns="seed").groupby("task", sort=False).mean().round(3)

# %% [markdown]
# ## 2. Accuracy against the scaling coefficient λ
# Addition: mean accuracy over the merged tasks, absolute and normalized (merged / fine-tuned), on
# validation (where λ is chosen) and test. Negation: target and control accuracy (test) as the negated
# target vector is scaled up; the dotted line is the pretrained control accuracy.

# %%
curves = outcome.extras["curves"]
runs = outcome.runs
fig_lambda, axes = plots.plt.subplots(1, 2, figsize=(11.5, 4), layout="constrained")
add_curves = curves[curves["experiment"] == "addition"] if "experiment" in curves else curves.iloc[0:0]
if len(add_curves):
    long = add_curves.melt(
        id_vars=["seed", "coef", "split"],
        value_vars=["avg_acc", "norm_acc"],
        var_name="metric",
        value_name="accuracy",
    )
    long["curve"] = (
        long["metric"].map({"avg_acc": "absolute", "norm_acc": "normalized"}) + " (" + long["split"] + ")"
    )
    plots.sns.lineplot(long, x="coef", y="accuracy", hue="curve", ax=axes[0], errorbar=plots.t95)
    for arm, style in (("pretrained", ":"), ("finetuned", "--")):
        axes[0].axhline(
            runs.loc[runs["arm"] == arm, "avg_acc"].mean(),
            ls=style,
            color="0.4",
            lw=1,
            label=f"{arm} (absolute, test)",
        )
    axes[0].legend(fontsize=8)
axes[0].set(
    title=f"Addition of {cfg.n_tasks} task vectors",
    xlabel="λ (scaling coefficient)",
    ylabel="mean accuracy over tasks",
)
neg = curves[(curves["experiment"] == "negation") & (curves["split"] == "test")].melt(
    id_vars=["seed", "coef", "target"],
    value_vars=["target_acc", "control_acc"],
    var_name="task",
    value_name="accuracy",
)
neg["task"] = neg["task"].map({"target_acc": "target (negated task)", "control_acc": "control (identity)"})
plots.sns.lineplot(neg, x="coef", y="accuracy", hue="task", ax=axes[1], errorbar=plots.t95)
axes[1].axhline(
    runs.loc[runs["arm"] == "pretrained", "control_acc"].mean(),
    ls=":",
    color="0.4",
    lw=1,
    label="pretrained control",
)
axes[1].legend(fontsize=8)
axes[1].set(
    title="Negation of one target task vector (test)", xlabel="λ (scaling coefficient)", ylabel="accuracy"
)

# %% [markdown]
# ## 3. Verdict
# Declared in `task_arithmetic.CLAIMS` before the runs: addition beats the pretrained model on the
# mean over tasks (by more than 2 points) and on every task (worst task's gain > 0); negation lowers
# the target's accuracy by more than 5 points while the control loses less than 3.

# %%
fig_paired, axes = plots.plt.subplots(1, 3, figsize=(14, 3.8), layout="constrained")
if "added" in set(runs["arm"]):
    plots.paired_effects(
        runs,
        "avg_acc",
        ["pretrained", "added", "finetuned"],
        ax=axes[0],
        title="Addition: mean test accuracy",
    )
plots.paired_effects(runs, "target_acc", ["pretrained", "negated"], ax=axes[1], title="Negation: target")
plots.paired_effects(runs, "control_acc", ["pretrained", "negated"], ax=axes[2], title="Negation: control")
claims.table(verdicts)

# %%
saved = results.save(
    "task_arithmetic",
    cfg,
    outcome,
    verdicts,
    figures={"lambda_curves": fig_lambda, "paired": fig_paired},
    out_dir=out_dir,
)
print("saved to", saved)
