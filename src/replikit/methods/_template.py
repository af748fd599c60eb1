"""<Method>: <paper title> (<authors>, <venue year>). Copy this file to ``methods/<name>.py`` to start.

Claim (abstract, verbatim): "<the sentence>". Paper: <the numbers, with their table and row>.
Reference code: <url> (<file>: <function>).

Algorithm. <The paper's equations, in a few lines; the code below marks them with ALGO LOGIC.>

Small scale (default profile): <data, model, optimiser, epochs, and why this design can show the
effect: the pilot on pilot seeds that settled it, with its numbers>. Deltas were declared before the
confirmation runs. Measured: see ``results/<name>/verdict.json`` and the README's generated table.

This template is a complete, runnable toy (``_template`` is not registered as a method: names starting
with an underscore are skipped): label smoothing against plain cross-entropy on MNIST-1D, two arms
paired seed by seed. Replace the toy with the paper's method; keep the shape.
"""

from __future__ import annotations

from typing import Literal

import pandas as pd
import pydantic
import torch
import torch.nn.functional as F

from replikit import data, models, sequential, train
from replikit.claims import Claim
from replikit.config import MethodConfig, derive_seed
from replikit.results import Outcome, Timer

NAME = "_template"  # the one name of module, notebook, params section, results folder and DVC item
PAPER = "Doe et al. 2020"
ARMS = ("baseline", "treatment")


class Config(MethodConfig):
    """One documented, bounded field per knob; sizes per profile live in params.yaml's ``<name>.profiles``."""

    dataset: Literal["mnist1d", "digits"] = pydantic.Field("mnist1d", description="training data")
    model: Literal["mlp", "cnn1d"] = "cnn1d"
    width: int = pydantic.Field(32, ge=4, le=1024, description="channels (CNN) or units (MLP)")
    smoothing: float = pydantic.Field(0.1, ge=0.0, lt=1.0, description="label smoothing of the treatment arm")
    epochs: int = pydantic.Field(10, ge=1, le=1000)
    batch_size: int = pydantic.Field(128, ge=8, le=8192)
    lr: float = pydantic.Field(2e-3, gt=0.0, le=1.0, description="Adam learning rate")
    train_subset: int = pydantic.Field(0, ge=0, description="use the first N training examples (0 = all)")


CLAIMS = [
    Claim(
        id=f"{NAME}.gain",
        paper=PAPER,
        quote="<a sentence of the paper, verbatim>",
        quote_kind="paraphrase",  # "verbatim" once it is the paper's sentence; glosses go in `note`
        metric="test_acc",
        treatment="treatment",
        baseline="baseline",
        delta=0.005,
        delta_reason="half a point: the smallest gain a user would act on at this scale",
        note="Final-epoch test accuracy.",
    ),
]


# ============================ ALGO LOGIC: the paper's equations ====================================


def smoothed_loss(logits: torch.Tensor, labels: torch.Tensor, smoothing: float) -> torch.Tensor:
    """Cross-entropy against (1 - s) one-hot + s / K uniform: a pure tensor function, unit-tested."""
    return F.cross_entropy(logits, labels, label_smoothing=smoothing)


# =================================== one run =======================================================


def run_one(cfg: dict, arm: str, rep: int) -> dict:
    """Train one (arm, seed); data, init and batch order depend on the seed only, so arms are paired."""
    cfg = Config(**cfg)
    device = train.resolve_device(cfg.device)
    ds = data.load(cfg.dataset)
    n = cfg.train_subset or len(ds.y_train)
    # data and models reach a run only through these two helpers (the right device, channels_last on CUDA)
    x, y = (train.to_device(a[:n], device) for a in (ds.x_train, ds.y_train))
    x_test, y_test = (train.to_device(a, device) for a in (ds.x_test, ds.y_test))
    train.manual_seed(derive_seed(cfg.seed, NAME, "init", rep))
    model = train.prepare_model(
        models.build(cfg.model, ds.input_shape, ds.n_classes, width=cfg.width), device
    )
    smoothing = cfg.smoothing if arm == "treatment" else 0.0

    def step(idx: torch.Tensor, p: float) -> torch.Tensor:
        return smoothed_loss(model(x[idx]), y[idx], smoothing)

    history = train.fit(
        step,
        model.parameters(),
        n,
        epochs=cfg.epochs,
        batch_size=cfg.batch_size,
        seed=derive_seed(cfg.seed, NAME, "batches", rep),
        device=device,
        lr=cfg.lr,
        evaluate=lambda: {"test_acc": train.accuracy(model, x_test, y_test)},
        models=[model],
        desc=f"{arm} seed {rep}",
        # everything the step draws from or learns beyond `models` (generators, other modules): none here
        resume_state={},
    )
    return {"arm": arm, "seed": rep, "test_acc": history[-1]["test_acc"], "history": history}


def run(cfg: Config, select: sequential.Select = sequential.every) -> Outcome:
    """Every arm over ``n_seeds`` seeds, one ``run_many`` task per (arm, seed) so finished runs are kept.

    ``select(arm, seed)``: ``replikit.sequential`` asks later looks for only the arms undecided claims read.
    """
    tasks = [
        {"cfg": cfg.model_dump(), "arm": a, "rep": r}
        for r in range(cfg.n_seeds)
        for a in ARMS
        if select(a, r)
    ]
    with Timer() as t:
        results = train.run_many(run_one, tasks, cfg.workers, cfg.device, desc=f"{NAME} runs")
    history = pd.DataFrame([dict(h, arm=r["arm"], seed=r["seed"]) for r in results for h in r["history"]])
    runs = pd.DataFrame([{k: v for k, v in r.items() if k != "history"} for r in results])
    return Outcome(
        runs=runs, history=history, runtime_s=t.seconds, device=str(train.resolve_device(cfg.device))
    )
