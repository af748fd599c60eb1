"""Scaling Laws for Downstream Task Performance of Large Language Models (Isik, Ponomareva, Hazimeh,
Paparas, Vassilvitskii, Koyejo; 2024, arXiv 2402.04177 v1; later versions, retitled "Scaling Laws for
Downstream Task Performance in Machine Translation", say "translation scores" for "BLEU score").

Claims (abstract of v1): "With sufficient alignment, both downstream cross-entropy and BLEU score improve
monotonically with more pretraining data. In such cases, we show that it is possible to predict the
downstream BLEU score with good accuracy using a log-law. However, there are also cases where
moderate misalignment causes the BLEU score to fluctuate or get worse with more pretraining, whereas
downstream cross-entropy monotonically improves." The paper's log law for the downstream metric after
fine-tuning, as a function of the pretraining data size D_p:
    f(D_p) = (log(A * D_p^alpha))^beta
(and a power law for the cross-entropy, L(D_p) = E + A / D_p^alpha). Setting: T5 models pretrained on
sub-sampled MC4 / multilingual corpora, fine-tuned on WMT translation. No reference code is public.

Small scale (default profile), a procedural stand-in for languages:
- The downstream "language" is an order-2 Markov chain over ``vocab`` = 16 tokens: each context (the
  previous two tokens) allows ``support`` = 8 next tokens with Dirichlet(1) probabilities.
- A *misaligned* chain has the same supports (the same "grammar") but the probabilities rolled by
  one place within each support, so its most likely next token is always another one.
- Pretraining data come from the mixture chain a * P_downstream + (1 - a) * P_misaligned: a = 1
  is the aligned arm, a = ``misaligned_alignment`` (0.3) the misaligned arm. ``misaligned_alignment
  = 1`` turns misalignment off (the two arms then coincide, seed by seed).
- Model: an MLP over the embeddings of the last two tokens (the order of the chain). For each D_p in
  ``pretrain_tokens`` (2^8 .. 2^15 tokens: 8 powers of two) a fresh model (same init) is pretrained
  for max(4 epochs, 300 steps) with cosine decay (small corpora are repeated: data-limited, not
  step-starved), then fine-tuned on a fixed downstream set of 512 tokens: up to 10 epochs, keeping
  the epoch (0 = the pretrained model) with the lowest loss on a quarter of the fine-tuning documents
  held out for that purpose (downstream data only; the test distribution is never used to choose).
- Metrics, evaluated exactly against the true downstream chain (expectation over its stationary
  distribution of contexts, no test-sampling noise): downstream cross-entropy (nats per token) and
  next-token accuracy (the probability that the model's most likely token is the one the chain emits).
  **Next-token accuracy stands in for BLEU**: both are scores of the decoded output, not of the
  predicted distribution, which is what the paper's contrast between BLEU and cross-entropy is about.
  Its ceiling is the chain's Bayes accuracy (sum_c pi_c max_y P(y|c), about 0.34 here).
- The log law is fit (scipy ``curve_fit``) on the 5 smallest sizes of each seed and predicts the 3
  larger ones; the verdicts are on the mean absolute prediction error, and on that error against the
  better of two forecasters without the law (persistence of the last fitted value; a straight line in
  raw D_p), seed by seed.
- The misaligned claim is tested as the paper states it, on the misaligned arm alone: per seed,
  1 - Spearman(accuracy, D_p) (0 = monotone improvement, 1 = no trend, 2 = monotone decline) must
  reach 0.5. (It used to be judged as "the misaligned arm gains less than the aligned one", which
  passed while the misaligned accuracy still rose, Spearman 0.93.)
- Every seed draws new chains, new corpora and new weights; both arms of a seed share the downstream
  chain, the fine-tuning set and the init.
- On a GPU (``pack: auto`` is 8 there for the MLP, 0 on the CPU), a look's (arm, seed) runs train as
  packs (:func:`run_pack`, :mod:`replikit.packed`): for each size, every member's pretraining as one
  vmapped model, then its fine-tuning as another, each member stopping at its own best epoch on its
  own held-out documents. The transformer of the full profile does not pack.

Design history (pilots on seeds 0-1, none of them the final run): with a fixed number of pretraining
epochs the small sizes got a handful of steps and the curve took off late (a sigmoid the log law
cannot extrapolate: 8 to 12 points of error); with a fixed step budget the large sizes were step-limited
and the curve flattened; a fixed 5-epoch fine-tuning *lowered* the accuracy of well-pretrained models
(forgetting on 2k tokens), capping the aligned curve: hence the held-out choice of the fine-tuning
epoch, which is also standard practice. The 2-point threshold of the log-law claim was declared after
these pilots and before the final run.

Second design pilot (pilot base seed 0, reps 0-2; 1 - Spearman of the misaligned accuracy, per rep):
with 2,048 fine-tuning tokens the misaligned accuracy still rose with D_p at every alignment tried:
a = 0.3: 0.05 / 0.07 / 0.02; a = 0.1: 0.21 / 0.07 / 0.00; a = 0 (pure misaligned chain): 0.00 / 0.17 /
0.07. Pretraining on the misaligned chain still teaches the shared supports, and 2,048 tokens of
fine-tuning undo its wrong preferences: that design could not show the effect at all. The paper
reports that the fine-tuning set's size shapes these curves, so the fine-tuning set was cut to 512
tokens: a = 0.3: 0.86 / 0.60 / 0.31 (accuracy peaks near 2^12 and falls), misaligned CE still
monotone (Spearman 1.00 / 1.00 / 1.00), aligned accuracy still monotone (Spearman 1.00 x 3); 1,024
tokens: 0.19 / 0.02 / 0.02. The 0.5 delta of the claim was declared before this pilot. The same pilot
shows the log law no better than persistence on pilot seeds (law minus best naive error, points:
2,048 tokens +0.7 / +0.3 / -2.0; 512 tokens +0.5 / +1.7 / +3.2): the claim against the naive
forecaster is kept as declared.

Measured before the changes above (2,048 fine-tuning tokens, the old comparative misaligned claim;
default profile, 8 seeds, 2 CPU cores): all five claims then reproduced. Aligned: Spearman(-CE, D_p) =
1.000 in every seed; Spearman(accuracy, D_p) 0.997 [0.990, 1.004]; the log law fit on 2^8..2^12 predicts
2^13..2^15 within 1.13 points [0.39, 1.88] (accuracy 0.294 -> 0.330, Bayes 0.340; the law overshoots
slightly as the curve nears the ceiling). Misaligned: cross-entropy still improves monotonically
(Spearman 1.000 in every seed) while the accuracy stalls: +2.4 points from 2^11 to 2^15 against +5.3 for
the aligned arm (paired difference +2.9 [+1.5, +4.2]); on average it still creeps up (Spearman 0.93)
rather than getting worse, and the log law fit on the misaligned small sizes overshoots by 3.0 points.
The misaligned pretrained model's own accuracy *falls* with D_p (0.144 at 2^11 -> 0.129 at 2^15: it
learns the wrong preferences ever better); fine-tuning recovers part of it. Caveat: at 2^8 tokens
pretraining overfits (downstream CE 4.3 nats, worse than no pretraining, 2.68).
"""

from __future__ import annotations

import itertools
import math
import warnings
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import pydantic
import torch
import torch.nn.functional as F
from scipy import optimize, stats
from torch import nn

from replikit import packed, train
from replikit.claims import Claim
from replikit.config import MethodConfig, derive_seed
from replikit.results import Outcome, Timer

NAME = "downstream_scaling"
PAPER = "Isik et al. 2024"
ARMS = ["aligned", "misaligned"]


class Config(MethodConfig):
    """Downstream scaling's knobs; sizes per profile live in params.yaml's ``downstream_scaling.profiles``."""

    corpus: Literal["markov", "text"] = pydantic.Field(
        "markov", description="procedural chains or text files"
    )
    vocab: int = pydantic.Field(16, ge=2, le=256, description="vocabulary size (markov corpus)")
    order: int = pydantic.Field(2, ge=1, le=4, description="Markov order of the chains (markov corpus)")
    support: int = pydantic.Field(8, ge=2, le=256, description="allowed next tokens per context")
    concentration: float = pydantic.Field(
        1.0, gt=0.0, le=100.0, description="Dirichlet concentration on the support"
    )
    misaligned_alignment: float = pydantic.Field(
        0.3,
        ge=0.0,
        le=1.0,
        description="a of the misaligned arm's pretraining mixture (1 = misalignment off)",
    )
    pretrain_tokens: list[int] = pydantic.Field(
        default_factory=lambda: [2**k for k in range(8, 16)], description="pretraining sizes D_p (tokens)"
    )
    n_fit: int = pydantic.Field(5, ge=3, le=50, description="the log law is fit on this many smallest sizes")
    finetune_tokens: int = pydantic.Field(512, ge=64, description="downstream fine-tuning tokens (fixed)")
    doc_len: int = pydantic.Field(128, ge=8, le=100_000, description="tokens per generated document")
    context: int = pydantic.Field(2, ge=1, le=512, description="tokens the model sees (= order for markov)")
    model: Literal["mlp", "transformer"] = pydantic.Field("mlp", description="next-token model")
    embed: int = pydantic.Field(16, ge=2, le=4096, description="token embedding size")
    hidden: int = pydantic.Field(
        128, ge=4, le=8192, description="hidden units (MLP) / model width (transformer)"
    )
    layers: int = pydantic.Field(2, ge=1, le=48, description="transformer layers")
    pretrain_epochs: int = pydantic.Field(4, ge=1, le=100, description="passes over the pretraining corpus")
    pretrain_min_steps: int = pydantic.Field(
        300,
        ge=0,
        le=1_000_000,
        description="small corpora get more passes, up to this many steps (data-limited)",
    )
    pretrain_lr: float = pydantic.Field(5e-3, gt=0.0, le=1.0, description="pretraining learning rate (Adam)")
    ft_epochs: int = pydantic.Field(
        10, ge=1, le=1000, description="fine-tuning epochs (at most; see ft_val_fraction)"
    )
    ft_val_fraction: float = pydantic.Field(
        0.25,
        ge=0.0,
        lt=1.0,
        description="share of the fine-tuning documents held out to pick the fine-tuning epoch, 0 included "
        "(0 = last)",
    )
    ft_lr: float = pydantic.Field(1e-3, gt=0.0, le=1.0, description="fine-tuning learning rate (Adam)")
    batch_size: int = pydantic.Field(256, ge=8, le=8192, description="batch size")
    eval_tokens: int = pydantic.Field(50_000, ge=1000, description="held-out tokens (text corpus only)")
    text_downstream: str = pydantic.Field(
        "data/external/text/downstream.txt", description="downstream text file"
    )
    text_aligned: str = pydantic.Field(
        "data/external/text/aligned.txt", description="aligned pretraining text"
    )
    text_misaligned: str = pydantic.Field(
        "data/external/text/misaligned.txt", description="misaligned pretraining text"
    )
    pack: int = packed.knob(
        "a look's (arm, seed) runs: each pretraining size's runs, then their fine-tunes, as packs",
        auto=8,
    )  # type: ignore[assignment]
    _resolve_pack = packed.auto_width(lambda c: c.get("model", "mlp") == "mlp", auto=8)

    @pydantic.model_validator(mode="after")
    def _packable(self) -> Config:
        if self.pack and self.model != "mlp":
            raise ValueError(
                "pack: the transformer does not pack (torch.func.vmap has no batching rule for its "
                "attention kernels, nor for the causal-mask check); use pack: 0"
            )
        return self

    @pydantic.model_validator(mode="after")
    def _sizes(self) -> Config:
        sizes = self.pretrain_tokens
        if len(sizes) < 5 or any(b <= a for a, b in itertools.pairwise(sizes)) or sizes[0] < 64:
            raise ValueError(f"pretrain_tokens must be >= 5 increasing sizes >= 64, got {sizes}")
        if sizes[-1] / sizes[0] < 2**4:
            raise ValueError("pretrain_tokens must span at least 5 powers of two (largest >= 16 x smallest)")
        if not 3 <= self.n_fit < len(sizes):
            raise ValueError(f"n_fit = {self.n_fit} must leave at least one larger size to predict")
        if self.corpus == "markov" and self.support > self.vocab:
            raise ValueError(f"support = {self.support} > vocab = {self.vocab}")
        if self.corpus == "markov" and self.context < self.order:
            raise ValueError(
                f"context = {self.context} < order = {self.order}: the model cannot see the chain's state"
            )
        return self


def naive_predictions(d: np.ndarray, f: np.ndarray, n_fit: int) -> dict[str, np.ndarray]:
    """What a forecaster without the law would say about the sizes after the first ``n_fit``.

    persistence: the last fitted value stays (the metric has stopped moving);
    linear: a straight line in the raw size D fitted on the first ``n_fit`` points (no log).
    """
    d, f = np.asarray(d, dtype=float), np.asarray(f, dtype=float)
    slope, icpt = np.polyfit(d[:n_fit], f[:n_fit], 1)
    return {"persistence": np.full(len(d) - n_fit, f[n_fit - 1]), "linear": icpt + slope * d[n_fit:]}


def misaligned_non_monotonicity(runs: pd.DataFrame) -> pd.Series:
    """Derived claim: per seed, 1 - Spearman(accuracy, D_p) of the misaligned arm.

    0: accuracy improves strictly monotonically with pretraining size; 1: no monotone trend (it
    fluctuates); 2: it gets strictly worse. Positive supports "fluctuates or gets worse"."""
    arm = runs[runs["arm"] == "misaligned"].set_index("seed").sort_index()
    return (1.0 - arm["metric_monotonicity"]).rename("metric_non_monotonicity")


def law_gain_over_naive(runs: pd.DataFrame) -> pd.Series:
    """Derived claim: per seed, aligned arm, the best naive predictor's error minus the log law's error
    (mean absolute error on the held-out larger sizes, accuracy units). Positive: the law predicts better."""
    arm = runs[runs["arm"] == "aligned"].set_index("seed").sort_index()
    return (arm["naive_error"] - arm["law_error"]).rename("law_gain_over_naive")


ALIGNED_QUOTE = (
    "With sufficient alignment, both downstream cross-entropy and BLEU score improve monotonically with more "
    "pretraining data."
)
LAW_QUOTE = (
    "In such cases, we show that it is possible to predict the downstream BLEU score with good accuracy "
    "using a log-law."
)
MISALIGNED_QUOTE = (
    "However, there are also cases where moderate misalignment causes the BLEU score to fluctuate or get "
    "worse with more pretraining, whereas downstream cross-entropy monotonically improves."
)
MONOTONE_DELTA = 0.1
MONOTONE_REASON = (
    "Spearman rho >= 0.9 over the 8 sizes = monotone up to noise: one swap of neighbouring sizes gives "
    "0.976, four give 0.905."
)

CLAIMS = [
    Claim(
        id="downstream_scaling.aligned_ce_monotone",
        paper=PAPER,
        quote=ALIGNED_QUOTE,
        metric="ce_monotonicity",
        treatment="aligned",
        baseline=None,
        constant=1.0,
        kind="non_inferiority",
        delta=MONOTONE_DELTA,
        delta_reason=MONOTONE_REASON,
        note="Per seed: Spearman correlation of -cross-entropy with pretraining size (1 = strictly "
        "monotone), against 1; reproduced if the whole CI lies above 0.9.",
    ),
    Claim(
        id="downstream_scaling.aligned_metric_monotone",
        paper=PAPER,
        quote=ALIGNED_QUOTE,
        metric="metric_monotonicity",
        treatment="aligned",
        baseline=None,
        constant=1.0,
        kind="non_inferiority",
        delta=MONOTONE_DELTA,
        delta_reason=MONOTONE_REASON,
        note="Per seed: Spearman correlation of next-token accuracy (BLEU's stand-in) with pretraining size.",
    ),
    Claim(
        id="downstream_scaling.aligned_log_law_predicts",
        paper=PAPER,
        quote=LAW_QUOTE,
        metric="neg_law_error",
        treatment="aligned",
        baseline=None,
        constant=0.0,
        kind="non_inferiority",
        delta=0.02,
        delta_reason="'good accuracy' read as a mean absolute prediction error under 2 accuracy points "
        "(declared after the design pilots, before the final runs).",
        note="Per seed: the log law fit on the n_fit smallest sizes predicts the larger ones; effect = "
        "-(mean absolute error in accuracy).",
    ),
    Claim(
        id="downstream_scaling.aligned_log_law_beats_naive",
        paper=PAPER,
        quote=LAW_QUOTE,
        metric="law_gain_over_naive",
        treatment="aligned",
        baseline=None,
        constant=0.0,
        statistic=law_gain_over_naive,
        delta=0.005,
        delta_reason="The law must predict at least half an accuracy point better (mean absolute error) than "
        "a forecaster with no law; a smaller gain would not justify fitting it.",
        note="Derived, per seed (aligned arm): min(error of persistence, error of a straight line in raw D) "
        "- error of the log law, on the sizes after the n_fit fitted ones. Persistence predicts the last "
        "fitted value; the better naive forecaster is taken seed by seed, a strict baseline.",
    ),
    Claim(
        id="downstream_scaling.misaligned_ce_monotone",
        paper=PAPER,
        quote=MISALIGNED_QUOTE,
        metric="ce_monotonicity",
        treatment="misaligned",
        baseline=None,
        constant=1.0,
        kind="non_inferiority",
        delta=MONOTONE_DELTA,
        delta_reason=MONOTONE_REASON,
        note="Per seed: Spearman correlation of -cross-entropy with pretraining size, misaligned arm.",
    ),
    Claim(
        id="downstream_scaling.misaligned_metric_not_monotone",
        paper=PAPER,
        quote=MISALIGNED_QUOTE,
        metric="metric_non_monotonicity",
        treatment="misaligned",
        baseline=None,
        constant=0.0,
        statistic=misaligned_non_monotonicity,
        delta=0.5,
        delta_reason="1 - Spearman >= 0.5 (rho <= 0.5): at most a weak monotone trend, i.e. the metric "
        "fluctuates (rho near 0) or gets worse (rho < 0); monotone improvement gives 0.",
        note="Derived, per seed (misaligned arm): 1 - Spearman(next-token accuracy, pretraining size). "
        "Tested as the paper states it, on the misaligned arm alone: a smaller gain than the aligned arm's "
        "does not count.",
    ),
]


# ============================ ALGO LOGIC: languages, the log law ===================================


def make_chain(
    vocab: int, order: int, support: int, concentration: float, rng: np.random.Generator
) -> np.ndarray:
    """Transition table P[context, next] of an order-``order`` chain; contexts indexed in base ``vocab``.

    Each context allows ``support`` next tokens (a random subset) with Dirichlet(concentration) weights.
    """
    n_ctx = vocab**order
    table = np.zeros((n_ctx, vocab))
    for c in range(n_ctx):
        allowed = rng.choice(vocab, size=support, replace=False)
        table[c, allowed] = rng.dirichlet(np.full(support, concentration))
    return table


def misalign(table: np.ndarray) -> np.ndarray:
    """Same supports, probabilities rolled by one place within each context's support (sorted by token).

    The grammar (what may follow what) is kept, the preferences are not: with distinct probabilities the
    most likely next token always changes.
    """
    out = np.zeros_like(table)
    for c, row in enumerate(table):
        allowed = np.flatnonzero(row > 0)
        out[c, allowed] = np.roll(row[allowed], 1)
    return out


def mixture(aligned: np.ndarray, other: np.ndarray, a: float) -> np.ndarray:
    """The pretraining chain a * P_aligned + (1 - a) * P_other (rows stay distributions)."""
    return a * aligned + (1.0 - a) * other


def context_index(tokens: np.ndarray, vocab: int) -> np.ndarray:
    """Base-``vocab`` index of each row of ``tokens`` (the last axis holds the context, oldest first)."""
    idx = np.zeros(tokens.shape[:-1], dtype=np.int64)
    for j in range(tokens.shape[-1]):
        idx = idx * vocab + tokens[..., j]
    return idx


def sample_docs(table: np.ndarray, vocab: int, order: int, n_docs: int, doc_len: int, rng) -> np.ndarray:
    """``n_docs`` documents of ``doc_len`` tokens from the chain (first ``order`` tokens uniform)."""
    docs = np.zeros((n_docs, doc_len), dtype=np.int64)
    docs[:, :order] = rng.integers(0, vocab, (n_docs, order))
    cum = np.cumsum(table, axis=1)
    for t in range(order, doc_len):
        ctx = context_index(docs[:, t - order : t], vocab)
        u = rng.random(n_docs)[:, None]
        docs[:, t] = np.minimum((u > cum[ctx]).sum(1), vocab - 1)
    return docs


def stationary_contexts(table: np.ndarray, vocab: int, order: int, iters: int = 2000) -> np.ndarray:
    """Stationary distribution over contexts (power iteration on the chain of contexts)."""
    from scipy import sparse

    n_ctx = vocab**order
    nxt = (np.arange(n_ctx)[:, None] * vocab) % n_ctx + np.arange(vocab)[None, :]  # context after token y
    rows = np.repeat(np.arange(n_ctx), vocab)
    step = sparse.csr_matrix((table.ravel(), (rows, nxt.ravel())), shape=(n_ctx, n_ctx)).T.tocsr()
    pi = np.full(n_ctx, 1.0 / n_ctx)
    for _ in range(iters):
        new = step @ pi
        if np.abs(new - pi).sum() < 1e-12:
            pi = new
            break
        pi = new
    return pi / pi.sum()


def expected_scores(log_q: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> dict[str, float]:
    """Cross-entropy sum_c w_c sum_y P(y|c) (-log q(y|c)) and accuracy sum_c w_c P(argmax q(c) | c).

    ``log_q``: model log-probabilities per context; ``target``: the true next-token distribution per
    context (one-hot rows for an empirical test stream); ``weight``: context weights summing to 1.
    """
    ce = -(weight * (target * log_q).sum(1)).sum()
    hit = target.gather(1, log_q.argmax(1, keepdim=True)).squeeze(1)
    return {"ce": float(ce), "acc": float((weight * hit).sum())}


def log_law(d: np.ndarray, log_a: float, alpha: float, beta: float) -> np.ndarray:
    """The paper's downstream-metric law f(D) = (log(A * D^alpha))^beta, with log A as the parameter."""
    u = log_a + alpha * np.log(np.asarray(d, dtype=float))
    return np.power(np.clip(u, 1e-9, None), beta)


def fit_log_law(d: np.ndarray, f: np.ndarray) -> tuple[float, float, float]:
    """Least-squares fit of :func:`log_law` to (d, f); started from the beta = 1 (log-linear) fit."""
    d, f = np.asarray(d, dtype=float), np.asarray(f, dtype=float)
    alpha0, log_a0 = np.polyfit(np.log(d), f, 1)
    p0 = (log_a0, alpha0, 1.0)
    if np.any(log_a0 + alpha0 * np.log(d) <= 0):  # the log-linear start must keep log(A D^alpha) > 0
        p0 = (1.0, max(alpha0, 1e-3), 1.0)
    with warnings.catch_warnings(), np.errstate(over="ignore", invalid="ignore"):
        warnings.simplefilter("ignore", optimize.OptimizeWarning)
        try:
            params, _ = optimize.curve_fit(log_law, d, f, p0=p0, maxfev=20000)
        except RuntimeError:  # no convergence: keep the log-linear start
            params = np.asarray(p0)
    if not np.all(np.isfinite(log_law(d, *params))):
        params = np.asarray(p0)
    return tuple(float(p) for p in params)


def monotonicity(sizes: np.ndarray, values: np.ndarray) -> float:
    """Spearman rank correlation of ``values`` with ``sizes`` (1: strictly increasing)."""
    if np.ptp(values) == 0:
        return 0.0  # a flat curve is not monotone
    rho = stats.spearmanr(sizes, values).statistic
    return float(rho) if np.isfinite(rho) else 0.0


def pretrain_epochs(n: int, epochs: int, min_steps: int, batch_size: int) -> int:
    """``epochs`` passes over ``n`` examples, or more passes on a small corpus to reach ``min_steps``
    steps."""
    steps_per_epoch = max(1, n // min(batch_size, n))
    return max(epochs, math.ceil(min_steps / steps_per_epoch))


# ===================================== models ======================================================


class ContextMLP(nn.Module):
    """Next-token logits from the embeddings of the last ``context`` tokens."""

    def __init__(self, vocab: int, context: int, embed: int, hidden: int):
        super().__init__()
        self.emb = nn.Embedding(vocab, embed)
        self.net = nn.Sequential(
            nn.Flatten(),
            nn.Linear(context * embed, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, vocab),
        )

    def forward(self, ctx: torch.Tensor) -> torch.Tensor:
        return self.net(self.emb(ctx))


class TinyTransformer(nn.Module):
    """A small causal transformer over the last ``context`` tokens; logits of the token after them."""

    def __init__(self, vocab: int, context: int, width: int, layers: int):
        super().__init__()
        self.emb = nn.Embedding(vocab, width)
        self.pos = nn.Parameter(torch.zeros(context, width))
        layer = nn.TransformerEncoderLayer(
            width, max(1, width // 32), 4 * width, dropout=0.0, batch_first=True, norm_first=True
        )
        self.body = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.out = nn.Linear(width, vocab)
        self.register_buffer(
            "mask", nn.Transformer.generate_square_subsequent_mask(context), persistent=False
        )

    def forward(self, ctx: torch.Tensor) -> torch.Tensor:
        h = self.body(
            self.emb(ctx) + self.pos[: ctx.shape[1]],
            mask=self.mask[: ctx.shape[1], : ctx.shape[1]],
        )
        return self.out(h[:, -1])


def build_model(cfg: Config, vocab: int) -> nn.Module:
    if cfg.model == "mlp":
        return ContextMLP(vocab, cfg.context, cfg.embed, cfg.hidden)
    return TinyTransformer(vocab, cfg.context, cfg.hidden, cfg.layers)


# ===================================== corpora =====================================================


def windows(docs: np.ndarray, context: int) -> tuple[np.ndarray, np.ndarray]:
    """(context, next-token) pairs inside each document."""
    length = docs.shape[1]
    starts = np.arange(length - context)
    ctx = docs[:, starts[:, None] + np.arange(context)[None, :]].reshape(-1, context)
    nxt = docs[:, starts + context].reshape(-1)
    return ctx, nxt


def read_bytes(path: str, n: int | None = None, offset: int = 0) -> np.ndarray:
    """A text file as byte tokens (vocabulary 256)."""
    from replikit.data import fake

    if fake.active() is not None:  # stand-in bytes (make gpu-check, tests of the full profile)
        return fake.text_bytes(path, n)
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"text corpus {file} not found (the text corpus is for the full profile)")
    raw = np.frombuffer(file.read_bytes(), dtype=np.uint8).astype(np.int64)
    return raw[offset : offset + n if n else None]


class Task:
    """Everything one (seed, arm) needs: pretraining corpora by size, fine-tuning set, evaluation."""

    def __init__(self, cfg: Config, arm: str, rep: int):
        a = 1.0 if arm == "aligned" else cfg.misaligned_alignment
        # chains depend on the seed only: both arms of a seed share the downstream language
        rng_chain = np.random.default_rng(derive_seed(cfg.seed, NAME, "data", "chain", rep))
        if cfg.corpus == "markov":
            self.vocab = cfg.vocab
            down = make_chain(cfg.vocab, cfg.order, cfg.support, cfg.concentration, rng_chain)
            pre = mixture(down, misalign(down), a)
            rng_ft = np.random.default_rng(derive_seed(cfg.seed, NAME, "data", "finetune", rep))
            self.ft_docs = sample_docs(
                down, cfg.vocab, cfg.order, max(1, cfg.finetune_tokens // cfg.doc_len), cfg.doc_len, rng_ft
            )
            rng_pre = np.random.default_rng(derive_seed(cfg.seed, NAME, "data", "pretrain", arm, rep))
            n_max = max(1, cfg.pretrain_tokens[-1] // cfg.doc_len)
            self.pre_docs = sample_docs(
                pre, cfg.vocab, cfg.order, n_max, cfg.doc_len, rng_pre
            )  # nested sizes
            # exact evaluation: every context, weighted by the downstream chain's stationary distribution
            n_ctx = cfg.vocab**cfg.order
            ctx = np.stack(np.unravel_index(np.arange(n_ctx), (cfg.vocab,) * cfg.order), 1)
            pad = np.zeros((n_ctx, cfg.context - cfg.order), dtype=np.int64)
            self.eval_ctx = np.concatenate([pad, ctx], 1)
            self.eval_target = down
            self.eval_weight = stationary_contexts(down, cfg.vocab, cfg.order)
            self.bayes_acc = float((self.eval_weight * down.max(1)).sum())  # the best any model can do
        else:  # byte-level text files (full profile)
            self.vocab = 256
            down_text = read_bytes(cfg.text_downstream)
            n_eval = min(cfg.eval_tokens, len(down_text) // 2)
            test = down_text[:n_eval]
            ft = down_text[n_eval : n_eval + cfg.finetune_tokens]
            pre = read_bytes(
                cfg.text_aligned if arm == "aligned" else cfg.text_misaligned, cfg.pretrain_tokens[-1]
            )

            def cut(x):
                return x[: len(x) // cfg.doc_len * cfg.doc_len].reshape(-1, cfg.doc_len)

            self.ft_docs, self.pre_docs = cut(ft), cut(pre)
            ctx, nxt = windows(cut(test), cfg.context)
            self.eval_ctx = ctx
            self.eval_target = np.eye(256)[nxt]
            self.eval_weight = np.full(len(nxt), 1.0 / len(nxt))
            self.bayes_acc = math.nan  # unknown for real text


class BestEpoch:
    """Early stopping's memory, as ``train.fit``'s ``evaluate``: after every epoch, the held-out loss
    ``val_loss()``; kept, the epoch of the lowest one (0: the model before training) and its weights. A
    checkpoint keeps it too (``state_dict``), so a resumed fine-tune picks the epoch an uninterrupted one
    would."""

    def __init__(self, model: nn.Module, val_loss):
        self.model, self.val_loss = model, val_loss
        self.epochs_seen = 0
        self.ce, self.epoch, self.state = val_loss(), 0, self._weights()

    def _weights(self) -> dict[str, torch.Tensor]:
        return {k: v.clone() for k, v in self.model.state_dict().items()}

    def __call__(self) -> dict[str, float]:
        self.epochs_seen += 1
        ce = self.val_loss()
        if ce < self.ce:
            self.ce, self.epoch, self.state = ce, self.epochs_seen, self._weights()
        return {"val_ce": ce}

    def state_dict(self) -> dict:
        return {"ce": self.ce, "epoch": self.epoch, "epochs_seen": self.epochs_seen, "state": self.state}

    def load_state_dict(self, saved: dict) -> None:
        self.ce, self.epoch, self.epochs_seen = saved["ce"], saved["epoch"], saved["epochs_seen"]
        device = next(iter(self.state.values())).device
        self.state = {k: v.to(device) for k, v in saved["state"].items()}


def cosine(p: float) -> float:
    """Pretraining's learning-rate factor at progress p: cosine decay to 0."""
    return 0.5 * (1.0 + math.cos(math.pi * p))


class _Run:
    """One (arm, seed) on the run's device: its corpora as (context, next-token) tensors, its model at
    init, its batch seeds and its exact scores. Shared by the plain and the packed paths."""

    def __init__(self, cfg: Config, arm: str, rep: int, device: torch.device):
        self.cfg, self.arm, self.rep, self.device = cfg, arm, rep, device
        self.task = task = Task(cfg, arm, rep)
        self.n_val = round(len(task.ft_docs) * cfg.ft_val_fraction)
        cut = len(task.ft_docs) - self.n_val
        self.ft = self._tensors(*windows(task.ft_docs[:cut], cfg.context))
        self.val = self._tensors(*windows(task.ft_docs[cut:], cfg.context))
        self.ev_x = self._tensors(task.eval_ctx)[0]
        self.ev_t, self.ev_w = self._tensors(task.eval_target, task.eval_weight, dtype=torch.float32)

    def _tensors(self, *arrays, dtype=torch.int64) -> list[torch.Tensor]:
        return [train.to_device(a, self.device, dtype) for a in arrays]

    def pretraining(self, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The first ``size`` tokens' (context, next-token) pairs (nested corpora)."""
        x, y = windows(self.task.pre_docs[: max(1, size // self.cfg.doc_len)], self.cfg.context)
        return tuple(self._tensors(x, y))

    def pretraining_epochs(self, n: int) -> int:
        cfg = self.cfg
        return pretrain_epochs(n, cfg.pretrain_epochs, cfg.pretrain_min_steps, cfg.batch_size)

    def fresh_model(self) -> nn.Module:
        """The model at init: the same for every size and both arms of a seed."""
        train.manual_seed(derive_seed(self.cfg.seed, NAME, "init", self.rep))
        return train.prepare_model(build_model(self.cfg, self.task.vocab), self.device)

    def batch_seed(self, role: str) -> int:
        return derive_seed(self.cfg.seed, NAME, "batches", role, self.arm, self.rep)

    def scores(self, model: nn.Module) -> dict[str, float]:
        return expected_scores(F.log_softmax(train.predict(model, self.ev_x), 1), self.ev_t, self.ev_w)

    def val_ce(self, logits: torch.Tensor) -> float:
        """Cross-entropy on the held-out fine-tuning documents, from their logits."""
        return F.cross_entropy(logits, self.val[1]).item()

    def summary(self, rows: list[dict]) -> dict:
        return summarize(self.cfg, pd.DataFrame(rows).assign(bayes_acc=self.task.bayes_acc))


def run_one(cfg: dict, arm: str, rep: int) -> dict:
    """Pretrain on each size, fine-tune on the fixed downstream set, score: one (arm, seed)."""
    cfg = Config(**cfg)
    device = train.resolve_device(cfg.device)
    r = _Run(cfg, arm, rep, device)

    def fit(model, x, y, epochs, lr, role, schedule=None, evaluate=None):
        """``evaluate``: None, or a :class:`BestEpoch`, which a checkpoint keeps with the model."""

        def step(b: torch.Tensor, p: float) -> torch.Tensor:
            return F.cross_entropy(model(x[b]), y[b])

        train.fit(
            step,
            model.parameters(),
            len(y),
            epochs=epochs,
            batch_size=min(cfg.batch_size, len(y)),
            seed=r.batch_seed(role),
            device=device,
            lr=lr,
            lr_schedule=schedule,
            evaluate=evaluate,
            models=[model],
            desc=f"{arm} {role} seed {rep}",
            resume_state={} if evaluate is None else {"best": evaluate},
        )

    def finetune(model, role) -> int:
        """Fine-tune; keep the epoch (0 = the pretrained model) of lowest held-out fine-tuning loss."""
        if not r.n_val:
            fit(model, *r.ft, cfg.ft_epochs, cfg.ft_lr, role)
            return cfg.ft_epochs

        best = BestEpoch(model, lambda: r.val_ce(train.predict(model, r.val[0])))
        fit(model, *r.ft, cfg.ft_epochs, cfg.ft_lr, role, evaluate=best)
        model.load_state_dict(best.state)
        return best.epoch

    rows = []
    for size in [0, *cfg.pretrain_tokens]:  # 0: fine-tuning from scratch, for reference
        model = r.fresh_model()
        row = {"arm": arm, "seed": rep, "pretrain_tokens": size}
        if size:
            pre_x, pre_y = r.pretraining(size)
            epochs = r.pretraining_epochs(len(pre_y))
            fit(model, pre_x, pre_y, epochs, cfg.pretrain_lr, f"pretrain {size}", schedule=cosine)
            row.update({f"pre_{k}": v for k, v in r.scores(model).items()})
        row["ft_epoch"] = finetune(model, f"finetune {size}")
        row.update(r.scores(model))
        rows.append(row)
    return r.summary(rows)


def run_pack(cfg: dict, members: list[tuple[str, int]]) -> list[dict]:
    """The (arm, seed) runs ``members`` (at most ``cfg.pack``) with their training packed
    (:func:`replikit.packed.fit`): for each size, every member's pretraining as one pack, then its
    fine-tuning as another, early stopping on each member's own held-out documents (``best``). Each member
    has the init, corpus, batch stream and schedule of its run in :func:`run_one`. Returns
    :func:`run_one`'s results, in ``members`` order."""
    cfg = Config(**cfg)
    device = train.resolve_device(cfg.device)
    runs = [_Run(cfg, arm, rep, device) for arm, rep in members]
    rows: list[list[dict]] = [[] for _ in runs]
    scratch = runs[0].fresh_model()  # scores each member's state in turn
    for size in [0, *cfg.pretrain_tokens]:
        nets = [r.fresh_model() for r in runs]
        new = [{"arm": r.arm, "seed": r.rep, "pretrain_tokens": size} for r in runs]
        if size:
            sets = [r.pretraining(size) for r in runs]
            epochs = runs[0].pretraining_epochs(len(sets[0][1]))
            states, _ = _fit_pack(cfg, runs, nets, sets, epochs, cfg.pretrain_lr, f"pretrain {size}", cosine)
            for r, net, state, row in zip(runs, nets, states, new):
                net.load_state_dict(state)
                row.update({f"pre_{k}": v for k, v in r.scores(net).items()})
        states, histories = _fit_pack(
            cfg, runs, nets, [r.ft for r in runs], cfg.ft_epochs, cfg.ft_lr, f"finetune {size}"
        )
        for r, state, history, row, done in zip(runs, states, histories, new, rows):
            scratch.load_state_dict(state)
            row["ft_epoch"] = history[-1]["best_epoch"] if r.n_val else cfg.ft_epochs
            row.update(r.scores(scratch))
            done.append(row)
    return [r.summary(done) for r, done in zip(runs, rows)]


def _fit_pack(cfg: Config, runs: list[_Run], nets, sets, epochs: int, lr: float, role: str, schedule=None):
    """One pack of :func:`run_pack`: member m trains ``nets[m]`` on ``sets[m]`` (its own (x, y)), with the
    batch stream of ``runs[m]``'s role; a fine-tune (no ``schedule``) keeps each member's epoch of lowest
    held-out loss, as :class:`BestEpoch` does for one run."""
    n = len(sets[0][1])
    if any(len(y) != n for _, y in sets):
        raise ValueError(f"{role}: a pack's members must have corpora of one size")
    device, width = runs[0].device, cfg.pack
    xs = torch.stack([x for x, _ in sets] + [sets[0][0]] * (width - len(sets)))
    slot = torch.arange(width, device=device)[:, None]
    batch = min(cfg.batch_size, n)
    early = schedule is None and runs[0].n_val > 0
    on_epoch = None
    if early:
        val_x, n_val = torch.cat([r.val[0] for r in runs]), len(runs[0].val[1])

        def on_epoch(epoch: int, predict) -> list[dict[str, float]]:
            # (width, members x n_val, vocab): each member's logits on every held-out set
            out = predict(val_x)
            return [{"val_ce": r.val_ce(out[m, m * n_val : (m + 1) * n_val])} for m, r in enumerate(runs)]

    return packed.fit(
        nets,
        [packed.Batches(torch.arange(n, device=device), batch, r.batch_seed(role)).next for r in runs],
        xs[0],
        torch.stack([y for _, y in sets]),
        epochs=epochs,
        steps_per_epoch=max(1, n // batch),
        width=width,
        lr=lr,
        lr_schedule=schedule,
        inputs=lambda idx: xs[slot, idx],
        on_epoch=on_epoch,
        best="val_ce" if early else None,
        desc=f"{role} pack of {len(runs)}",
        resume_state={},
    )


def summarize(cfg: Config, curve: pd.DataFrame) -> dict:
    """Per (arm, seed): monotonicity of CE and accuracy, the log law's fit and its prediction error."""
    c = curve[curve["pretrain_tokens"] > 0].sort_values("pretrain_tokens")
    d, acc, ce = c["pretrain_tokens"].to_numpy(float), c["acc"].to_numpy(), c["ce"].to_numpy()
    params = fit_log_law(d[: cfg.n_fit], acc[: cfg.n_fit])
    pred = log_law(d, *params)
    curve = curve.assign(law_pred=np.r_[np.nan, pred] if len(curve) == len(d) + 1 else np.nan)
    err = np.abs(pred[cfg.n_fit :] - acc[cfg.n_fit :])
    naive_err = {
        k: float(np.abs(v - acc[cfg.n_fit :]).mean()) for k, v in naive_predictions(d, acc, cfg.n_fit).items()
    }
    mid = len(d) // 2
    summary = {
        "arm": c["arm"].iloc[0],
        "seed": int(c["seed"].iloc[0]),
        "ce_monotonicity": monotonicity(d, -ce),
        "metric_monotonicity": monotonicity(d, acc),
        "metric_non_monotonicity": 1.0 - monotonicity(d, acc),
        "law_error": float(err.mean()),
        "neg_law_error": -float(err.mean()),
        "persistence_error": naive_err["persistence"],
        "linear_error": naive_err["linear"],
        "naive_error": min(
            naive_err.values()
        ),  # the better naive forecaster, seed by seed (a strict baseline)
        "law_gain_over_naive": min(naive_err.values()) - float(err.mean()),
        "metric_gain_late": float(acc[-1] - acc[mid - 1]),
        "ce_gain_late": float(ce[mid - 1] - ce[-1]),
        "acc_max_size": float(acc[-1]),
        "ce_max_size": float(ce[-1]),
        "acc_scratch": float(curve.loc[curve["pretrain_tokens"] == 0, "acc"].iloc[0]),
        "acc_bayes": float(curve["bayes_acc"].iloc[0]) if "bayes_acc" in curve else math.nan,
        "law_log_a": params[0],
        "law_alpha": params[1],
        "law_beta": params[2],
    }
    return {"summary": summary, "curve": curve}


def run(cfg: Config) -> Outcome:
    """Both arms over ``n_seeds`` seeds; runs = per-seed summaries, history = the scaling curves."""
    base = {"cfg": cfg.model_dump()}
    tasks = [(arm, r) for r in range(cfg.n_seeds) for arm in ARMS]
    with Timer() as t:
        if cfg.pack:  # in task order, cfg.pack (arm, seed) runs a pack
            packs = [dict(base, members=list(chunk)) for _, chunk in packed.chunks(tasks, cfg.pack)]
            done = train.run_many(run_pack, packs, cfg.workers, cfg.device, desc="scaling packs")
            results = [r for pack in done for r in pack]
        else:
            tasks = [dict(base, arm=arm, rep=r) for arm, r in tasks]
            results = train.run_many(run_one, tasks, cfg.workers, cfg.device, desc="scaling runs")
    runs = pd.DataFrame([r["summary"] for r in results])
    curves = pd.concat([r["curve"] for r in results], ignore_index=True)
    return Outcome(
        runs=runs, history=curves, runtime_s=t.seconds, device=str(train.resolve_device(cfg.device))
    )
