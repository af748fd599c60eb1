"""Critical learning periods in deep linear networks (Kleinman, Achille, Soatto, ICLR 2024).

Claims (abstract): "We show that critical periods depend on the depth of the model and structure of the
data distribution. We also show analytically and in simulations that the learning of features is tied to
competition between sources." Paper, Fig. 1-2: an early deficit to pathway B lets pathway A learn more of
each feature, more so the deeper the pathways (depths 2 to 13); a late deficit has a negligible effect on
the final solution.
Reference code: github.com/mjkleinman/CriticalPeriodDeepLinearNets (``multipath/multichannel_net_diag.py``:
``MultipathwayNet``; ``multipath/analysis_diag.py``: ``train_mcn``).

Model. Two pathways, each a product of ``depth`` matrices, W_p = L_p,D ... L_p,1, whose outputs are
summed: y_hat = W_a x_a + W_b x_b. The inputs are two noisy views of one latent, x_s = z + noise * e_s, and
the target is a linear teacher y = A z (singular values ``spectrum``). Training is full-batch gradient
descent on the mean squared error, which for a linear model depends on the data only through the sample
moments (C_xx, C_yx): we descend the exact full-batch loss at the cost of a few 8x8 matrix products.
Both pathways start from the *same* small, balanced, rank-aligned initialization (the reference code's:
W_1 = R D V^T, W_i = R D R^T, W_D = U D R^T with one R, so every pathway's end-to-end map starts at
``init_scale`` * U V^T whatever its depth), so the no-deficit control is symmetric up to the data's noise.

Deficit. Pathway B is deprived for steps [start, start + T_d). ``deficit: gate`` (default) follows the
reference code's ``gate_path``: B's output is detached, so its weights do not learn while its (tiny, at an
early deficit) output still counts. ``deficit: zero`` removes source B instead (x_b = 0: B neither learns
nor contributes); early on the two coincide, late they differ (under ``zero`` pathway A must absorb B's
part during the deficit, then hand it back). Arms per depth: ``control`` (no deficit), ``early_short`` and
``early_long`` (from step 0), ``late`` (``long_deficit`` steps from ``late_start``, after the control has
converged), and two arms without a competitor (source A silenced throughout): ``solo_control`` and
``solo_early_long``. All arms train for the same ``steps`` and share the data and the init (paired).

Measures. ``deprived_share`` = <W_b, W_a + W_b> / |W_a + W_b|^2 (Frobenius): B's share of the end-to-end
map, 1/2 for a symmetric solution, 0 if A carries everything (a scalar version of the paper's pathway
singular values K_b / (K_a + K_b)). ``deprived_gain`` = <W_b, G_b> / |G_b|^2 with G_b the least-squares map
of source B alone: how much of what B could learn it did learn (defined for the solo arms too).

Small scale (default profile): latent/view/output dim 8, teacher singular values 3..1, 2000 samples, view
noise 0.2 (redundant sources), init_scale 1e-3, lr 0.05, 3000 steps, deficits of 100 and 400 steps, late
deficit from step 1000 (the depth-4 control has converged by step ~600). Pilot (pilot:0 seed base, seeds
0-2, CPU; mean final share of B for control / early_short / early_long / late):
    ``deficit: gate``  depth 1: 0.499 / 0.497 / 0.496 / 0.499   depth 2: 0.499 / 0.494 / 0.486 / 0.499
                       depth 3: 0.508 / 0.399 / 0.308 / 0.510   depth 4: 0.497 / 0.412 / 0.222 / 0.485
(control sd over seeds <= 0.021; depth-4 early_long sd 0.019; harm slope per seed 0.114, 0.091, 0.095
share per layer; competition gap 0.61, 0.51, 0.52: without a competitor B relearns >= 99% of its map).
An earlier pilot (same design, the old integer seed 0) gave the same picture; with ``deficit: zero`` only
the late arm differs (the early ones agree to 3 decimals): late share 0.490 / 0.476 / 0.454 at depths
1 / 3 / 4. Under the paper's gate a deficit after convergence cannot move the solution (the gradient is
~0 there), so the late claim mainly checks that the window has closed; ``deficit: zero`` is the harder
test (A absorbs B's part, then hands it back slowly). Data matter as the paper says: with view_noise 0.5
(sources less redundant, so B keeps a gradient of its own after A has learned) every depth recovers
(old-seed pilot: depth 4 early_long 0.482, harm slope 0.001-0.012 per layer, competition gap 0.01-0.07).
A 3-seed pilot takes ~18 s of CPU (12 runs).
"Lasting" means: at the end of a fixed training period 6.5 times the long deficit. With two *noisy* views
the least-squares optimum is unique, so a deep deprived pathway is not stuck forever: its share is still
creeping up at step 3000 (see the trajectory figure); the harm is a recovery slowed by orders of
magnitude, not a new fixed point. In the paper's model (both pathways read the same input) the flow
conserves the split once the loss is fitted, and the harm is permanent.
Measured result: results/critical_periods/verdict.json.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd
import pydantic
import torch

from replikit import resume, train
from replikit.claims import Claim
from replikit.config import MethodConfig, derive_seed
from replikit.results import Outcome, Timer

NAME = "critical_periods"
PAPER = "Kleinman, Achille, Soatto 2024"
CONDITIONS = ("control", "early_short", "early_long", "late", "solo_control", "solo_early_long")
DEEP = 4  # the depth the single-depth claims are judged at (its arms are absent, hence skipped, if not swept)


class Config(MethodConfig):
    """Multi-pathway deep linear nets under a temporary deficit; sizes per profile in params.yaml."""

    depths: list[int] = pydantic.Field(
        default_factory=lambda: [1, 2, 3, 4], description="matrices per pathway (1 = shallow), one group each"
    )
    dim_in: int = pydantic.Field(8, ge=2, le=512, description="latent = each view's dimension")
    dim_out: int = pydantic.Field(8, ge=2, le=512, description="target dimension")
    width: int = pydantic.Field(
        8, ge=2, le=1024, description="hidden units per layer (>= min(dim_in, dim_out))"
    )
    n_samples: int = pydantic.Field(2000, ge=16, le=1_000_000, description="training examples (full batch)")
    view_noise: float = pydantic.Field(0.2, ge=0.0, le=10.0, description="noise std per view; latent std 1")
    spectrum: tuple[float, float] = pydantic.Field(
        (3.0, 1.0), description="teacher singular values, largest and smallest (linearly spaced between)"
    )
    init_scale: float = pydantic.Field(
        1e-3, gt=0.0, le=1.0, description="singular value of each pathway's end-to-end map at init"
    )
    lr: float = pydantic.Field(0.05, gt=0.0, le=1.0, description="gradient-descent step size")
    steps: int = pydantic.Field(3000, ge=10, le=1_000_000, description="full-batch steps, every arm")
    short_deficit: int = pydantic.Field(100, ge=1, description="steps of the short early deficit")
    long_deficit: int = pydantic.Field(
        400, ge=1, description="steps of the long early and of the late deficit"
    )
    late_start: int = pydantic.Field(1000, ge=1, description="first step of the late deficit")
    deficit: Literal["gate", "zero"] = pydantic.Field(
        "gate", description="gate: B stops learning (reference code); zero: source B removed"
    )
    record_every: int = pydantic.Field(
        50, ge=1, description="steps between recorded points of the trajectories"
    )

    @pydantic.model_validator(mode="after")
    def _schedule_fits(self) -> Config:
        if not self.short_deficit <= self.long_deficit:
            raise ValueError(f"short_deficit={self.short_deficit} exceeds long_deficit={self.long_deficit}")
        if not (self.long_deficit <= self.late_start and self.late_start + self.long_deficit <= self.steps):
            raise ValueError(
                f"late_start={self.late_start}: the late deficit must start after the long early one "
                f"ends and end before steps={self.steps}"
            )
        if self.width < min(self.dim_in, self.dim_out):
            raise ValueError(
                f"width={self.width} below min(dim_in, dim_out): the pathways could not fit the map"
            )
        if not all(1 <= d <= 16 for d in self.depths) or len(set(self.depths)) != len(self.depths):
            raise ValueError(f"depths={self.depths}: distinct integers in 1..16 expected")
        return self


# ============================ ALGO LOGIC: the paper's model ========================================


def aligned_init(depth: int, dim_in: int, dim_out: int, width: int, scale: float, gen: torch.Generator):
    """Balanced rank-aligned layers whose product is ``scale * U_r V_r^T`` (reference code's diagonal init).

    W_1 = c R V_r^T, W_i = c R R^T, W_D = c U_r R^T with c = scale^(1/depth) and one semi-orthogonal R, so
    W_{i+1}^T W_{i+1} = W_i W_i^T (balanced) and the end-to-end singular values equal ``scale`` at any depth.
    """
    rank = min(dim_in, dim_out)
    u = torch.linalg.qr(torch.randn(dim_out, dim_out, generator=gen))[0][:, :rank]
    v = torch.linalg.qr(torch.randn(dim_in, dim_in, generator=gen))[0][:, :rank]
    r = torch.linalg.qr(torch.randn(width, rank, generator=gen))[0]
    c = scale ** (1.0 / depth)
    if depth == 1:
        return [scale * u @ v.T]
    return [c * r @ v.T] + [c * r @ r.T for _ in range(depth - 2)] + [c * u @ r.T]


def end_to_end(layers: list[torch.Tensor]) -> torch.Tensor:
    """W_D ... W_1 (batched over any leading dimensions)."""
    w = layers[0]
    for layer in layers[1:]:
        w = layer @ w
    return w


def deficit_masks(conditions, cfg: Config) -> tuple[torch.Tensor, torch.Tensor]:
    """(learn, output) masks, shape (arms, 2 pathways, steps): 1 = pathway learns / contributes at that step.

    A deprived pathway B stops learning (``gate``) or loses its input (``zero``: no output, hence no
    gradient either); the solo arms silence source A throughout.
    """
    t = torch.arange(cfg.steps)
    learn = torch.ones(len(conditions), 2, cfg.steps)
    output = torch.ones(len(conditions), 2, cfg.steps)
    windows = {
        "early_short": (0, cfg.short_deficit),
        "early_long": (0, cfg.long_deficit),
        "solo_early_long": (0, cfg.long_deficit),
        "late": (cfg.late_start, cfg.late_start + cfg.long_deficit),
    }
    for i, cond in enumerate(conditions):
        if cond.startswith("solo"):
            output[i, 0] = 0.0
        if cond in windows:
            start, end = windows[cond]
            off = (t >= start) & (t < end)
            (learn if cfg.deficit == "gate" else output)[i, 1, off] = 0.0
    return learn, output


def effective_maps(w: torch.Tensor, learn: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
    """Per-pathway maps as the loss sees them: scaled by ``output``, gradient blocked where ``learn`` is 0.

    w: (arms, 2, out, in); learn, output: (arms, 2) for the current step.
    """
    learn, output = learn[..., None, None], output[..., None, None]
    return output * (learn * w + (1.0 - learn) * w.detach())


def mse_from_moments(
    w_eff: torch.Tensor, cxx: torch.Tensor, cyx: torch.Tensor, cyy: torch.Tensor
) -> torch.Tensor:
    """Full-batch 1/2 E|y - W_a x_a - W_b x_b|^2 per arm, from the moments of x = [x_a, x_b] and y."""
    w = torch.cat([w_eff[:, 0], w_eff[:, 1]], dim=-1)  # (arms, out, 2 in)
    return 0.5 * ((w @ cxx) * w).sum((-2, -1)) - (w * cyx).sum((-2, -1)) + 0.5 * torch.trace(cyy)


def pathway_share(w_a: torch.Tensor, w_b: torch.Tensor) -> torch.Tensor:
    """<W_b, W_a + W_b> / |W_a + W_b|^2 over the last two dims: B's share of the summed map (A's: 1 - it)."""
    total = w_a + w_b
    return (w_b * total).sum((-2, -1)) / (total * total).sum((-2, -1)).clamp_min(1e-30)


def pathway_gain(w: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """<W, G> / |G|^2: the fraction of the reference map G that W carries."""
    return (w * reference).sum((-2, -1)) / (reference * reference).sum()


# =================================== data and one run ==============================================


def make_views(cfg: Config, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Two noisy views of one latent and a linear teacher's target: (x = [x_a, x_b], y), a row per example."""
    hi, lo = cfg.spectrum
    rank = min(cfg.dim_in, cfg.dim_out)
    u = torch.linalg.qr(torch.randn(cfg.dim_out, cfg.dim_out, generator=gen))[0][:, :rank]
    v = torch.linalg.qr(torch.randn(cfg.dim_in, cfg.dim_in, generator=gen))[0][:, :rank]
    teacher = u @ torch.diag(torch.linspace(hi, lo, rank)) @ v.T
    z = torch.randn(cfg.n_samples, cfg.dim_in, generator=gen)
    views = [z + cfg.view_noise * torch.randn(cfg.n_samples, cfg.dim_in, generator=gen) for _ in range(2)]
    return torch.cat(views, dim=1), z @ teacher.T


def run_one(cfg: dict, depth: int, rep: int) -> dict:
    """Every condition at one depth on one seed's data and init (batched); final measures + trajectories."""
    cfg = Config(**cfg)
    device = train.resolve_device(cfg.device)
    # data and init depend on the repetition only (the init also on the depth), never on the condition
    x, y = make_views(cfg, torch.Generator().manual_seed(derive_seed(cfg.seed, NAME, "data", rep)))
    x, y = x.to(device), y.to(device)
    n = len(x)
    cxx, cyx, cyy = x.T @ x / n, y.T @ x / n, y.T @ y / n
    d = cfg.dim_in
    solo_b = torch.linalg.solve(cxx[d:, d:], cyx[:, d:].T).T  # least squares from source B alone
    gen = torch.Generator().manual_seed(derive_seed(cfg.seed, NAME, "init", depth, rep))
    init = aligned_init(depth, cfg.dim_in, cfg.dim_out, cfg.width, cfg.init_scale, gen)
    arms = len(CONDITIONS)
    # the same init for both pathways and every condition: (arms, 2, rows, cols) per layer
    layers = [w.to(device).expand(arms, 2, *w.shape).clone().requires_grad_(True) for w in init]
    learn, output = (m.to(device) for m in deficit_masks(CONDITIONS, cfg))

    record = [s for s in range(cfg.steps) if s % cfg.record_every == 0] + [cfg.steps]
    recorded = set(record)
    loop = resume.Loop({f"layer{i}": w for i, w in enumerate(layers)}, total=cfg.steps)
    start, logs = loop.resume(device)  # a killed run resumes (a run store's)
    shares = logs.get("shares", [])
    losses = logs.get("losses", [])
    for step in range(start, cfg.steps + 1):
        w = end_to_end(layers)
        if step in recorded:  # measured before the update: step s = after s updates
            with torch.no_grad():
                eff = w * output[:, :, min(step, cfg.steps - 1), None, None]
                shares.append(pathway_share(eff[:, 0], eff[:, 1]))
        if step == cfg.steps:
            break
        loss = mse_from_moments(effective_maps(w, learn[:, :, step], output[:, :, step]), cxx, cyx, cyy)
        if step in recorded:
            losses.append(loss.detach())
        for layer in layers:
            layer.grad = None
        loss.sum().backward()
        with torch.no_grad():
            for layer in layers:
                layer -= cfg.lr * layer.grad
        if step in recorded:
            loop.save_if_due(step + 1, shares=shares, losses=losses)
    with torch.no_grad():
        w = end_to_end(layers)
        final_loss = mse_from_moments(w * output[:, :, -1, None, None], cxx, cyx, cyy)
        gain = pathway_gain(w[:, 1], solo_b)
    if not torch.isfinite(final_loss).all():
        raise train.DivergenceError(f"depth {depth} seed {rep}: loss {final_loss.tolist()}; lower lr")
    shares = torch.stack(shares).cpu()  # (records, arms)
    losses = torch.stack(losses + [final_loss]).cpu()
    rows, history = [], []
    for i, cond in enumerate(CONDITIONS):
        solo = cond.startswith("solo")
        rows.append(
            {
                "arm": f"depth{depth}_{cond}",
                "seed": rep,
                "depth": depth,
                "condition": cond,
                "deprived_share": float("nan")
                if solo
                else shares[-1, i].item(),  # A silenced: share is 1 by fiat
                "deprived_gain": gain[i].item(),
                "final_loss": final_loss[i].item(),
            }
        )
        history += [
            {
                "arm": f"depth{depth}_{cond}",
                "seed": rep,
                "depth": depth,
                "condition": cond,
                "step": s,
                "deprived_share": float("nan") if solo else shares[k, i].item(),
                "loss": losses[k, i].item(),
            }
            for k, s in enumerate(record)
        ]
    return {"rows": rows, "history": history}


def run(cfg: Config) -> Outcome:
    """Every condition at every depth over ``n_seeds`` seeds: one run_many task per (depth, seed)."""
    base = {"cfg": cfg.model_dump()}
    tasks = [dict(base, depth=depth, rep=r) for r in range(cfg.n_seeds) for depth in cfg.depths]
    with Timer() as t:
        results = train.run_many(run_one, tasks, cfg.workers, cfg.device, desc="critical-period runs")
    runs = pd.DataFrame([row for r in results for row in r["rows"]])
    history = pd.DataFrame([row for r in results for row in r["history"]])
    return Outcome(
        runs=runs, history=history, runtime_s=t.seconds, device=str(train.resolve_device(cfg.device))
    )


# =================================== derived claim statistics ======================================


def _wide(runs: pd.DataFrame, metric: str) -> pd.DataFrame:
    return runs.pivot_table(index="seed", columns=["depth", "condition"], values=metric)


def harm_slope(runs: pd.DataFrame) -> pd.Series:
    """Per seed: least-squares slope, against depth, of the lasting harm of the long early deficit
    (control share - deprived share), in share per added layer; > 0 = deeper nets keep more harm."""
    wide = _wide(runs, "deprived_share")
    depths = sorted({d for d, c in wide.columns if c == "early_long"})
    if len(depths) < 2:
        return pd.Series(dtype=float)  # a trend needs two depths: the claim is skipped
    harm = np.stack([wide[(d, "control")] - wide[(d, "early_long")] for d in depths], axis=1)
    x = np.asarray(depths, float) - np.mean(depths)
    return pd.Series(harm @ x / (x @ x), index=wide.index, name="harm_slope")


def competition_gap(runs: pd.DataFrame) -> pd.Series:
    """Per seed at depth DEEP: what B retains of its own control's gain after the long early deficit,
    without a competitor minus with one; > 0 = the deficit's lasting harm comes from the competing source."""
    wide = _wide(runs, "deprived_gain")
    if (DEEP, "solo_control") not in wide.columns:
        return pd.Series(dtype=float)  # depth DEEP not swept: the claim is skipped
    solo = wide[(DEEP, "solo_early_long")] / wide[(DEEP, "solo_control")]
    duo = wide[(DEEP, "early_long")] / wide[(DEEP, "control")]
    return (solo - duo).rename("competition_gap")


QUOTE_DEPTH = (
    "We show that critical periods depend on the depth of the model and structure of the data distribution."
)
QUOTE_COMPETITION = (
    "We also show analytically and in simulations that the learning of features is tied to competition "
    "between sources."
)

CLAIMS = [
    Claim(
        id=f"{NAME}.deep_early_harm",
        paper=PAPER,
        quote=QUOTE_DEPTH,
        metric="deprived_share",
        treatment=f"depth{DEEP}_early_long",
        baseline=f"depth{DEEP}_control",
        higher_is_better=False,
        delta=0.1,
        delta_reason="a drop of 0.1 in B's share is a fifth of its fair half, five times the control's "
        "spread across seeds (pilot sd <= 0.02): the smallest loss that would read as a lasting imbalance",
        note="Effect = control share - deprived share of pathway B at the end of training, depth 4, after "
        "a long early deficit (steps 0..long_deficit) and a fixed period of normal training (the deprived "
        "pathway is still recovering slowly at the end: lasting = within the training horizon).",
    ),
    Claim(
        id=f"{NAME}.shallow_recovers",
        paper=PAPER,
        quote=QUOTE_DEPTH,
        metric="deprived_share",
        treatment="depth1_early_long",
        baseline="depth1_control",
        kind="non_inferiority",
        delta=0.05,
        delta_reason="half the deep-harm threshold: a shallow net whose deprived pathway ends within 0.05 "
        "of its control share has recovered for any practical purpose",
        note="Depth 1 (a single matrix per pathway): after the same long early deficit, B's share is "
        "within the margin of the control's.",
    ),
    Claim(
        id=f"{NAME}.harm_grows_with_depth",
        paper=PAPER,
        quote=QUOTE_DEPTH,
        metric="deprived_share",
        treatment=f"depth{DEEP}_early_long",
        baseline="depth1_early_long",
        statistic=harm_slope,
        delta=0.03,
        delta_reason="0.03 share per added layer is about 0.1 of share from depth 1 to 4, the deep-harm "
        "threshold",
        note="Derived: per seed, the least-squares slope against depth of the long early deficit's "
        "lasting harm (control share - deprived share), over all swept depths.",
    ),
    Claim(
        id=f"{NAME}.late_no_harm",
        paper=PAPER,
        quote="In contrast, late deficits have a negligible effect on the final solution, where neither "
        "pathway dominates (on average) how a feature is learned.",
        metric="deprived_share",
        treatment=f"depth{DEEP}_late",
        baseline=f"depth{DEEP}_control",
        kind="non_inferiority",
        delta=0.05,
        delta_reason="the same margin as shallow recovery: within 0.05 of the control share counts as "
        "no harm",
        note="Quote: the paper's Fig. 1 caption, bottom row. Depth 4: the same long deficit, started at "
        "late_start (after the control has converged).",
    ),
    Claim(
        id=f"{NAME}.competition",
        paper=PAPER,
        quote=QUOTE_COMPETITION,
        metric="deprived_gain",
        treatment=f"depth{DEEP}_solo_early_long",
        baseline=f"depth{DEEP}_early_long",
        statistic=competition_gap,
        delta=0.2,
        delta_reason="B keeping 20 points more of its own control's gain without a competitor than with "
        "one: the competitor must account for a large part of the harm, not a trace of it",
        note="Derived, depth 4: gain(solo_early_long)/gain(solo_control) - gain(early_long)/gain(control), "
        "per seed; the solo arms silence source A throughout.",
    ),
]
