"""Task Arithmetic: Editing Models with Task Arithmetic (Ilharco et al., ICLR 2023).

Claims (abstract): "Negating a task vector decreases performance on the target task, with little
change in model behavior on control tasks. Moreover, adding task vectors together can improve
performance on multiple tasks at once." Paper, CLIP ViT-L/14, forgetting via negation (Table 1):
average target accuracy 64.8 -> 19.0 while the control task (ImageNet) goes 75.5 -> 72.9 (checked
against the paper's table in review).
Addition (Section 4): one model from the sum of 8 task vectors reaches about 91% of the individually
fine-tuned models' accuracy (normalized accuracy) with ViT-L/14.
Reference code: github.com/mlfoundations/task_vectors (``src/task_vectors.py``).

Algorithm. tau_t = theta_ft(t) - theta_pre. Addition: theta = theta_pre + lambda * sum_t tau_t, one lambda
for all tasks, chosen on held-out validation data by the mean normalized accuracy (merged accuracy /
fine-tuned accuracy, per task). Negation: theta = theta_pre - lambda * tau_target, lambda chosen as the
one giving the lowest target accuracy on validation while the control task keeps at least 95% of the
pretrained model's control accuracy (the paper's rule). Lambda grid: {0.05, 0.10, ..., 1.0}.
The switch that turns the ingredient off is lambda = 0 (the pretrained model, arm ``pretrained``).

Small scale (default profile; the apparatus lives in :mod:`replikit.families.merging`): scikit-learn's 8x8
digits. A one-hidden-layer MLP encoder (1,024 units) is pretrained on a small mixture of ten task
variants (20 examples each), one linear head per task is fitted on 30 examples' pretrained features
and frozen (few-shot heads play CLIP's zero-shot heads: pretrained ~0.75 test accuracy, not at
ceiling), and a copy of the encoder is fine-tuned per task on 700 of its examples, its head frozen
(~0.97). Addition uses the 8 symmetries of the square as tasks (identity, rotations, flips,
transposes): same digits, different input families, so the fine-tunes pull the encoder different
ways. Negation's targets are pixel-permuted digits with permuted labels (a different input family
without spatial structure); the control is the identity task. Validation (250 examples, for lambda)
is carved from the training data; the test set is never used to choose anything. Pilots on MNIST-1D
(the first choice) gave fine-tuned accuracies of only 0.45-0.55 with an MLP, too weak to
study merging, hence digits; ``dataset: mnist1d`` still runs it.
Measured (default profile, 8 seeds, CPU; effect [95% CI]): addition of the 8 task vectors (lambda
~0.3) lifts mean test accuracy from 0.746 (pretrained) to 0.805, +0.059 [+0.047, +0.072], normalized
accuracy 0.77 -> 0.83 (fine-tuned 0.971), and every task gains (worst task +0.018 [+0.006, +0.029]);
negation (lambda ~1.0) lowers the target from 0.749 to 0.529, -0.221 [-0.239, -0.202], while the
control moves 0.756 -> 0.753, -0.004 [-0.007, -0.000]. All four claims reproduced. The merged model
stays far below the fine-tuned ones (0.83 normalized against the paper's ~0.91 with ViT-L/14).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pydantic

from replikit import train
from replikit.claims import Claim
from replikit.families import merging
from replikit.families.merging import MergingConfig
from replikit.results import Outcome, Timer

NAME = "task_arithmetic"
PAPER = "Ilharco et al. 2023"


def _grid(lo: float, hi: float, step: float) -> list[float]:
    return [round(x, 4) for x in np.arange(lo, hi + step / 2, step)]


class Config(MergingConfig):
    """Task arithmetic's knobs (apparatus knobs in MergingConfig); sizes per profile in params.yaml."""

    n_tasks: int = pydantic.Field(
        8, ge=2, le=8, description="tasks merged by addition (the first n transforms of the family)"
    )
    n_targets: int = pydantic.Field(
        2, ge=1, le=8, description="permuted-signal tasks forgotten by negation, one at a time"
    )
    lambdas: list[float] = pydantic.Field(
        default_factory=lambda: _grid(0.05, 1.0, 0.05),
        min_length=1,
        description="scaling coefficients tried on validation (addition and negation)",
    )
    control_retention: float = pydantic.Field(
        0.95,
        gt=0.0,
        le=1.0,
        description="negation: the control task must keep this fraction of its pretrained val accuracy",
    )
    addition: bool = pydantic.Field(True, description="run the addition experiment (off: only negation)")

    @pydantic.field_validator("lambdas")
    @classmethod
    def _positive(cls, v: list[float]) -> list[float]:
        if any(not 0.0 < x <= 5.0 for x in v):
            raise ValueError("every lambda must lie in (0, 5]")
        return sorted(v)


NEGATION_QUOTE = (
    "Negating a task vector decreases performance on the target task, with little change in model behavior "
    "on control tasks."
)
NEGATION_SOURCE = "Table 1 (ViT-L/14; 'Pre-trained' and 'Negative task vector')"

CLAIMS = [
    Claim(
        id="task_arithmetic.addition_gain",
        paper=PAPER,
        quote="Adding task vectors together can improve performance on multiple tasks at once.",
        metric="avg_acc",
        treatment="added",
        baseline="pretrained",
        delta=0.02,
        delta_reason="2 points of mean accuracy over the merged tasks: the gain must clearly exceed what "
        "re-choosing lambda on validation moves.",
        note="Mean test accuracy over the merged tasks, each with its frozen head; one lambda chosen on "
        "validation by mean normalized accuracy.",
    ),
    Claim(
        id="task_arithmetic.addition_every_task",
        paper=PAPER,
        quote="Adding task vectors together can improve performance on multiple tasks at once.",
        metric="min_gain",
        treatment="added",
        baseline="pretrained",
        delta=0.005,
        delta_reason="half a point for the worst task: improving 'multiple tasks at once' read as every "
        "merged task gaining, by more than test-set rounding (1 of ~200 examples).",
        note="Read as: every task improves. Worst task's test-accuracy gain over the pretrained model (the "
        "baseline's is 0 by definition).",
    ),
    Claim(
        id="task_arithmetic.negation_target",
        paper=PAPER,
        quote=NEGATION_QUOTE,
        metric="target_acc",
        treatment="negated",
        baseline="pretrained",
        higher_is_better=False,
        delta=0.05,
        delta_reason="a drop of more than 5 points on the target: forgetting must be large to count as the "
        "paper's (its drop is 46 points).",
        paper_value={"pretrained": 0.648, "negated": 0.190},
        paper_source=NEGATION_SOURCE + ", target (mean over the 8 tasks)",
        note="Target test accuracy, mean over the permuted-signal targets (each negated on its own).",
    ),
    Claim(
        id="task_arithmetic.negation_control",
        paper=PAPER,
        quote=NEGATION_QUOTE,
        metric="control_acc",
        treatment="negated",
        baseline="pretrained",
        kind="non_inferiority",
        delta=0.03,
        delta_reason="'little change' declared as losing less than 3 points of control accuracy (the paper "
        "lost 2.6).",
        paper_value={"pretrained": 0.755, "negated": 0.729},
        paper_source=NEGATION_SOURCE + ", control (ImageNet)",
        note="Control (identity task) test accuracy after negation vs pretrained.",
    ),
]


# ============================ ALGO LOGIC: addition and negation =====================================


def choose_addition_lambda(val_norm: dict[float, float]) -> float:
    """The lambda with the best mean normalized validation accuracy."""
    return merging.best_coef(val_norm)


def choose_negation_lambda(
    val_target: dict[float, float], val_control: dict[float, float], control_floor: float
) -> float:
    """Lowest target validation accuracy among the lambdas whose control accuracy stays >= the floor;
    0.0 (no edit) when none qualifies."""
    ok = [c for c in sorted(val_target) if val_control[c] >= control_floor]
    return min(ok, key=lambda c: val_target[c]) if ok else 0.0


def run_one(cfg: dict, rep: int) -> dict:
    """One seed: pretrain, fine-tune, then addition and negation with lambdas chosen on validation."""
    cfg = Config(**cfg)
    sources = merging.source_names(cfg)
    add_tasks = merging.addition_tasks(merging.addition_names(cfg.dataset, cfg.n_tasks), sources)
    targets = merging.negation_targets(cfg.n_targets, sources[0])
    suite = merging.build_suite(cfg, add_tasks + targets, rep, NAME)
    pre = suite.pretrained.state
    names = [t.name for t in add_tasks]
    control = merging.control_name(sources)
    all_names = names + [t.name for t in targets]
    acc = {s: suite.accuracies(pre, all_names, s) for s in ("val", "test")}
    ft = {s: {n: suite.accuracy(suite.finetuned[n].state, n, s) for n in all_names} for s in ("val", "test")}
    curves, rows = [], []

    def row(arm, **kw):
        rows.append(dict(arm=arm, seed=rep, **kw))

    per_task = [
        {"seed": rep, "task": n, "pretrained": acc["test"][n], "finetuned": ft["test"][n]} for n in all_names
    ]

    # addition: theta_pre + lambda * sum_t tau_t
    if cfg.addition:
        tau_sum = merging.sum_vectors(suite.taus(names))
        val_norm, test_acc = {}, {}
        for lam in cfg.lambdas:
            state = merging.apply(pre, tau_sum, lam)
            va = suite.accuracies(state, names, "val")
            te = suite.accuracies(state, names, "test")
            val_norm[lam] = merging.mean(va[n] / ft["val"][n] for n in names)
            test_acc[lam] = te
            curves.append(
                {
                    "seed": rep,
                    "experiment": "addition",
                    "coef": lam,
                    "split": "val",
                    "avg_acc": merging.mean(va.values()),
                    "norm_acc": val_norm[lam],
                }
            )
            curves.append(
                {
                    "seed": rep,
                    "experiment": "addition",
                    "coef": lam,
                    "split": "test",
                    "avg_acc": merging.mean(te.values()),
                    "norm_acc": merging.mean(te[n] / ft["test"][n] for n in names),
                }
            )
        lam = choose_addition_lambda(val_norm)
        chosen = test_acc[lam]
        for r in per_task:
            r["added"] = chosen.get(r["task"], np.nan)
        row(
            "pretrained",
            avg_acc=merging.mean(acc["test"][n] for n in names),
            norm_acc=merging.mean(acc["test"][n] / ft["test"][n] for n in names),
            min_gain=0.0,
        )
        row("finetuned", avg_acc=merging.mean(ft["test"][n] for n in names), norm_acc=1.0)
        row(
            "added",
            avg_acc=merging.mean(chosen.values()),
            norm_acc=merging.mean(chosen[n] / ft["test"][n] for n in names),
            min_gain=min(chosen[n] - acc["test"][n] for n in names),
            coef=lam,
        )

    # negation: theta_pre - lambda * tau_target, one target at a time
    floor = cfg.control_retention * acc["val"][control]
    neg = []
    for t in targets:
        tau = merging.task_vector(suite.finetuned[t.name].state, pre)
        vt, vc, tt, tc = {}, {}, {}, {}
        for lam in cfg.lambdas:
            state = merging.apply(pre, merging.negate(tau), lam)
            vt[lam], vc[lam] = suite.accuracy(state, t.name, "val"), suite.accuracy(state, control, "val")
            tt[lam], tc[lam] = suite.accuracy(state, t.name, "test"), suite.accuracy(state, control, "test")
            for split, a, b in (("val", vt, vc), ("test", tt, tc)):
                curves.append(
                    {
                        "seed": rep,
                        "experiment": "negation",
                        "target": t.name,
                        "coef": lam,
                        "split": split,
                        "target_acc": a[lam],
                        "control_acc": b[lam],
                    }
                )
        lam = choose_negation_lambda(vt, vc, floor)
        neg.append(
            {
                "coef": lam,
                "target": tt.get(lam, acc["test"][t.name]),
                "control": tc.get(lam, acc["test"][control]),
            }
        )
        for r in per_task:
            if r["task"] == t.name:
                r["negated"] = neg[-1]["target"]
    target_pre = merging.mean(acc["test"][t.name] for t in targets)
    rows_neg = {
        "target_acc": merging.mean(n["target"] for n in neg),
        "control_acc": merging.mean(n["control"] for n in neg),
    }
    if cfg.addition:
        rows[0].update(target_acc=target_pre, control_acc=acc["test"][control])
    else:
        row("pretrained", target_acc=target_pre, control_acc=acc["test"][control])
    row("negated", **rows_neg, coef=merging.mean(n["coef"] for n in neg))
    row("finetuned_target", target_acc=merging.mean(ft["test"][t.name] for t in targets))
    return {"rows": rows, "curves": curves, "per_task": per_task, "history": suite.history}


def run(cfg: Config) -> Outcome:
    """Addition and negation over ``n_seeds`` seeds (one process task per seed)."""
    tasks = [{"cfg": cfg.model_dump(), "rep": r} for r in range(cfg.n_seeds)]
    with Timer() as t:
        results = train.run_many(run_one, tasks, cfg.workers, cfg.device, desc="task arithmetic seeds")
    runs = pd.DataFrame([row for r in results for row in r["rows"]])
    history = pd.DataFrame([dict(h, seed=i) for i, r in enumerate(results) for h in r["history"]])
    return Outcome(
        runs=runs,
        history=history,
        runtime_s=t.seconds,
        device=str(train.resolve_device(cfg.device)),
        extras={
            "curves": pd.DataFrame([c for r in results for c in r["curves"]]),
            "per_task": pd.DataFrame([p for r in results for p in r["per_task"]]),
        },
    )
