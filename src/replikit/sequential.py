"""Sequential seeds: each claim gets the seeds it needs to be decided, up to ``n_max``, and no more.

A group-sequential design. Looks come at n_1 = ``n_seeds``, then every ``seed_batch`` more seeds, up to
``n_max``. Look k spends part of the error budget alpha by the Lan-DeMets spending function of
Pocock type, alpha(t) = alpha * ln(1 + (e - 1) t), at information fraction t_k = n_k / n_max
(Lan & DeMets 1983, "Discrete sequential boundaries for clinical trials", Biometrika 70(3):659-663,
where this function is proposed as the analogue of Pocock's boundaries). Look k judges every claim
with a two-sided t-interval at level 1 - (alpha(t_k) - alpha(t_{k-1})). Since the looks' spends add up
to alpha, the union bound
keeps, for each claim, the chance of ever reading ``reproduced`` when its true effect is <= 0, or
``not_reproduced`` when it is >= delta, below alpha / 2 each, however many looks it takes (conservative:
the bound ignores the correlation between looks). Pocock's function spends early, which suits small n.

A claim stops at its first decided look: its verdict, n and interval are frozen there. Seeds are added
while any claim is undecided; the runs already done are never redone (``train.run_many`` reads them from
the run store, :mod:`replikit.resume`). Each verdict records its n, its looks and why it stopped.

The seeds a later look adds train only the arms that the claims still undecided read
(:attr:`Claim.arm_patterns`), when the method's ``run`` takes a ``select(arm, seed) -> bool`` argument:
the first look's seeds run every arm (figures and tables keep them all), and the later ones run what is
left to decide. No verdict depends on it: each run's seeds derive from its own arm and seed, never from
which other runs exist, so a skipped arm changes no other run's numbers (tested).
"""

from __future__ import annotations

import fnmatch
import inspect
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import ModuleType

from replikit import resume
from replikit.claims import Claim, ClaimResult, judge_all
from replikit.config import MethodConfig, find_root
from replikit.results import Outcome

ALPHA = 0.05


def looks(n0: int, n_max: int, batch: int) -> list[int]:
    """Seed counts at which the claims are judged: n0, n0 + batch, ..., n_max (n_max always last)."""
    if n_max <= n0:
        return [n0]
    return [*range(n0, n_max, batch), n_max]


def spending(t: float, alpha: float = ALPHA) -> float:
    """Pocock-type alpha spending (Lan & DeMets 1983): the error spent by information fraction t."""
    return alpha * math.log(1 + (math.e - 1) * min(max(t, 0.0), 1.0))


def look_alphas(ns: list[int], alpha: float = ALPHA) -> list[float]:
    """The alpha each look spends; they add up to ``alpha``. One look spends it all."""
    spent = [spending(n / ns[-1], alpha) for n in ns]
    return [b - a for a, b in zip([0.0, *spent[:-1]], spent)]


def arms_needed(claims: Sequence[Claim]) -> tuple[str, ...]:
    """Glob patterns of every arm that ``claims`` read (sorted, without repeats)."""
    return tuple(sorted({p for c in claims for p in c.arm_patterns}))


Select = Callable[[str, int], bool]
"""``select(arm, seed)``: whether a method's ``run`` trains that arm of that seed."""


def every(arm: str, seed: int) -> bool:
    """The default ``select`` of a method's ``run``: every arm of every seed (the first look, a plain run)."""
    return True


@dataclass
class Selection:
    """Which (arm, seed) runs a look trains: seeds from ``starts[k]`` on need only ``patterns[k]``."""

    starts: list[int] = field(default_factory=list)
    patterns: list[tuple[str, ...]] = field(default_factory=list)

    def add(self, first_seed: int, patterns: tuple[str, ...]) -> None:
        self.starts.append(first_seed)
        self.patterns.append(patterns)

    def __call__(self, arm: str, seed: int) -> bool:
        k = max((i for i, s in enumerate(self.starts) if s <= seed), default=None)
        return k is None or any(fnmatch.fnmatchcase(arm, p) for p in self.patterns[k])


def takes_select(method: ModuleType) -> bool:
    return "select" in inspect.signature(method.run).parameters


def replicate(
    method: ModuleType, cfg: MethodConfig, alpha: float = ALPHA
) -> tuple[Outcome, list[ClaimResult]]:
    """Run ``method`` on growing seed counts until every claim is decided or ``n_max`` is reached.

    Returns the outcome of the last look (every seed run) and one result per claim in ``method.CLAIMS``,
    each frozen at the look that decided it. Runs are recorded in the method's run store, so each look
    only trains the new seeds and a killed job resumes; ``results.save`` removes the store.
    """
    ns = looks(cfg.n_seeds, cfg.n_max, cfg.seed_batch)
    alphas = look_alphas(ns, alpha)
    final: dict[str, ClaimResult] = {}
    runtime = 0.0
    selection = Selection()
    with resume.using(resume.store_folder(find_root(), method.NAME, cfg)):
        for k, (n, a) in enumerate(zip(ns, alphas), start=1):
            undecided = [c for c in method.CLAIMS if c.id not in final]
            selection.add(ns[k - 2] if k > 1 else 0, ("*",) if k == 1 else arms_needed(undecided))
            extra = {"select": selection} if takes_select(method) else {}
            outcome = method.run(cfg.model_copy(update={"n_seeds": n}), **extra)
            runtime += outcome.runtime_s
            for r in judge_all(method.CLAIMS, outcome.runs, alpha=a):
                if r.claim.id in final:
                    continue
                r.looks, r.seed_role = k, cfg.seed.role
                if r.verdict == "skipped":
                    r.stop = "skipped"
                elif r.decided:
                    r.stop = f"decided at look {k} of {len(ns)}"
                elif k == len(ns):
                    r.stop = "undecided at n_max" if len(ns) > 1 else "undecided (one look)"
                else:
                    continue
                final[r.claim.id] = r
            if len(final) == len(method.CLAIMS):
                break
    outcome.runtime_s = runtime
    return outcome, [final[c.id] for c in method.CLAIMS]
