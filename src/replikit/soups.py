"""Model soups (Wortsman et al., ICML 2022) as pure functions on state dicts.

A *soup* is the element-wise average of the weights of several models fine-tuned from the same
pretrained initialisation. It costs one model at inference, unlike a logit ensemble.

- :func:`uniform_soup`: the plain average of all ingredients.
- :func:`greedy_soup`: the paper's Recipe 1: sort the ingredients by held-out validation accuracy
  (best first), start from the best one, and add each next ingredient to the soup only if the soup's
  validation accuracy does not drop (``>=``, as in the paper's Recipe 1).

Reference code: github.com/mlfoundations/model-soups (``main.py``, steps 4 and 5). These functions know
nothing about models or data: the caller passes a function that scores a state dict on validation data.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import torch

StateDict = Mapping[str, torch.Tensor]


# ============================ ALGO LOGIC: averaging weights ========================================


def average(state_dicts: Sequence[StateDict], weights: Sequence[float] | None = None) -> dict[str, torch.Tensor]:
    """Weighted element-wise average of ``state_dicts`` (uniform when ``weights`` is None).

    Floating-point tensors are averaged; integer buffers (e.g. BatchNorm's ``num_batches_tracked``)
    are taken from the first state dict. All state dicts must have the same keys and shapes.
    """
    if not state_dicts:
        raise ValueError("cannot average an empty list of state dicts")
    keys = list(state_dicts[0])
    for i, sd in enumerate(state_dicts[1:], 1):
        if list(sd) != keys:
            raise ValueError(f"state dict {i} has keys {sorted(sd)} but state dict 0 has {sorted(keys)}")
    if weights is None:
        weights = [1.0 / len(state_dicts)] * len(state_dicts)
    if len(weights) != len(state_dicts):
        raise ValueError(f"{len(weights)} weights for {len(state_dicts)} state dicts")
    total = float(sum(weights))
    if total <= 0:
        raise ValueError(f"weights must sum to a positive number, got {total}")
    out: dict[str, torch.Tensor] = {}
    for key in keys:
        first = state_dicts[0][key]
        for i, sd in enumerate(state_dicts[1:], 1):
            if sd[key].shape != first.shape:
                raise ValueError(f"{key}: shape {tuple(sd[key].shape)} in state dict {i}, {tuple(first.shape)} in 0")
        if not first.is_floating_point():
            out[key] = first.clone()
            continue
        acc = torch.zeros_like(first, dtype=torch.float64)
        for w, sd in zip(weights, state_dicts):
            acc += (w / total) * sd[key].to(torch.float64)
        out[key] = acc.to(first.dtype)
    return out


def uniform_soup(state_dicts: Sequence[StateDict]) -> dict[str, torch.Tensor]:
    """theta = (1/k) sum_i theta_i over all k ingredients."""
    return average(state_dicts)


@dataclass
class GreedySoup:
    """The greedy soup, which ingredients it took (indices into the input list) and the trace."""

    state_dict: dict[str, torch.Tensor]
    chosen: list[int]
    val_score: float
    order: list[int]  # ingredients sorted by their own validation score, best first
    trace: list[dict] = field(default_factory=list)  # one row per ingredient tried


def greedy_soup(
    state_dicts: Sequence[StateDict],
    evaluate: Callable[[dict[str, torch.Tensor]], float],
    scores: Sequence[float] | None = None,
) -> GreedySoup:
    """Recipe 1 of the paper: greedy soup by held-out validation score (higher is better).

    evaluate: validation score of a state dict (e.g. validation accuracy); called on every candidate.
    scores: the ingredients' own validation scores, when already known (else computed with evaluate).
    Ties in ``scores`` keep the input order (a stable sort).
    """
    if not state_dicts:
        raise ValueError("greedy soup of no ingredients")
    scores = [float(s) for s in scores] if scores is not None else [float(evaluate(dict(sd))) for sd in state_dicts]
    if len(scores) != len(state_dicts):
        raise ValueError(f"{len(scores)} scores for {len(state_dicts)} state dicts")
    order = sorted(range(len(state_dicts)), key=lambda i: -scores[i])
    chosen = [order[0]]
    best = scores[order[0]]
    soup = average([state_dicts[order[0]]])
    trace = [{"ingredient": order[0], "own_score": best, "soup_score": best, "added": True}]
    for i in order[1:]:
        candidate = average([state_dicts[j] for j in chosen + [i]])
        score = float(evaluate(candidate))
        added = score >= best  # "if ValAcc(average(ingredients + [theta_i])) >= ValAcc(average(ingredients))"
        trace.append({"ingredient": i, "own_score": scores[i], "soup_score": score, "added": added})
        if added:
            chosen.append(i)
            best, soup = score, candidate
    return GreedySoup(soup, chosen, best, order, trace)
