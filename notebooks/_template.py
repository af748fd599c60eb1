# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # <Method>: <paper title>
# <Authors> (<venue year>). Copy this file to `notebooks/<name>.py` and replace `_template` with the name.
#
# > *"<the claim, verbatim>"*
#
# <Two or three sentences: what the method does and what the small-scale design tests.>
# The algorithm and the claims live in `src/replikit/methods/<name>.py`; this notebook runs, shows and judges.

# %% tags=["parameters"]
profile = None  # smoke | default | full; None: params.yaml's `profile`
overrides = {}  # the method's parameters to change, e.g. {"smoothing": 0.2}; validated
out_dir = None  # None: scratch/<name> (interactive runs never touch DVC's results/)

# %%
from replikit import claims, plots, results, sequential
from replikit.methods import _template as method
from replikit.methods import load_config

cfg = load_config(method.NAME, profile=profile, overrides=overrides)
cfg

# %% [markdown]
# ## 1. Train every arm, seed by seed; add seeds while a claim is undecided (up to `n_max`)

# %%
outcome, verdicts = sequential.replicate(method, cfg)
print(f"{len(outcome.runs)} runs in {outcome.runtime_s:.0f} s on {outcome.device}")
outcome.runs.groupby("arm")[["test_acc"]].agg(["mean", "std"])

# %% [markdown]
# ## 2. Training curves (mean over seeds, 95% band)

# %%
fig_curves, ax = plots.plt.subplots(figsize=(5.5, 3.8))
plots.curves(outcome.history, "test_acc", ax=ax, title="Test accuracy", ylabel="accuracy")

# %% [markdown]
# ## 3. Verdict
# Declared in `CLAIMS` before the confirmation runs, each with its delta and the reason for it.

# %%
fig_paired, ax = plots.plt.subplots(figsize=(4.5, 3.6))
plots.paired_effects(outcome.runs, "test_acc", list(method.ARMS), ax=ax, title="Final epoch")
claims.table(verdicts)

# %%
saved = results.save(
    method.NAME, cfg, outcome, verdicts, figures={"curves": fig_curves, "paired": fig_paired}, out_dir=out_dir
)
print("saved to", saved)
