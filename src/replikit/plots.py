"""One look for every figure: seaborn's whitegrid theme, colourblind palette, fixed arm colours."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from scipy import stats


def style() -> None:
    sns.set_theme(context="notebook", style="whitegrid", palette="colorblind", font_scale=0.95)
    plt.rcParams.update(
        {"figure.dpi": 100, "axes.titleweight": "bold", "axes.spines.top": False, "axes.spines.right": False}
    )


def arm_palette(arms: list[str]) -> dict[str, tuple]:
    colors = sns.color_palette("colorblind", n_colors=max(len(arms), 3))
    return dict(zip(arms, colors))


def t95(values) -> tuple[float, float]:
    """The 95% t-interval of the mean over seeds, as an ``errorbar=`` for seaborn: the interval the
    judge reports (:mod:`replikit.claims`), in microseconds where seaborn's bootstrap takes a second a
    figure. One seed: no interval."""
    v = np.asarray(values, dtype=float)
    v = v[~np.isnan(v)]
    mean = float(v.mean()) if len(v) else float("nan")
    if len(v) < 2:
        return mean, mean
    half = float(stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v)))
    return mean - half, mean + half


def curves(history: pd.DataFrame, y: str, ax=None, hue: str = "arm", title: str | None = None, ylabel=None):
    """Mean over seeds with a 95% t-band, one line per arm, against epoch."""
    ax = ax or plt.subplots(figsize=(5.5, 3.6))[1]
    arms = list(dict.fromkeys(history[hue]))
    sns.lineplot(history, x="epoch", y=y, hue=hue, errorbar=t95, ax=ax, palette=arm_palette(arms))
    ax.set_title(title or y)
    ax.set_ylabel(ylabel or y)
    return ax


def band(
    data: pd.DataFrame, x: str, y: str, hue: str, ax=None, log: bool = False, level: float = 0.95, legend=True
):
    """Mean over seeds with a ``level`` t-band, one line per ``hue``, against ``x``: seaborn's lineplot
    without its bootstrap, so curves with hundreds of points per line draw at once.

    ``log``: the mean and band of log10(y) (a geometric mean), for positive data on a log axis, where an
    arithmetic band could cross zero.
    """
    ax = ax or plt.subplots(figsize=(5.5, 3.6))[1]
    d = data[[x, y, hue]].dropna()
    if log:
        d = d[d[y] > 0].assign(**{y: lambda f: np.log10(f[y])})
    g = d.groupby([hue, x], sort=False)[y].agg(["mean", "std", "count"]).reset_index()
    half = stats.t.ppf(0.5 + level / 2, np.maximum(g["count"] - 1, 1)) * g["std"] / np.sqrt(g["count"])
    g["lo"], g["hi"] = g["mean"] - half.fillna(0), g["mean"] + half.fillna(0)
    if log:
        g[["mean", "lo", "hi"]] = 10 ** g[["mean", "lo", "hi"]]
    pal = arm_palette(list(dict.fromkeys(g[hue])))
    for key, part in g.groupby(hue, sort=False):
        part = part.sort_values(x)
        ax.plot(part[x], part["mean"], color=pal[key], label=str(key))
        ax.fill_between(part[x], part["lo"], part["hi"], color=pal[key], alpha=0.2, lw=0)
    if legend:
        ax.legend(title=hue)
    ax.set(xlabel=x, ylabel=y)
    return ax


def paired_effects(runs: pd.DataFrame, metric: str, arms: list[str], ax=None, title: str | None = None):
    """Each seed's metric per arm, joined by lines, with the means marked: the paired comparison."""
    ax = ax or plt.subplots(figsize=(4.5, 3.6))[1]
    wide = runs[runs["arm"].isin(arms)].pivot(index="seed", columns="arm", values=metric)[arms]
    for _, row in wide.iterrows():
        ax.plot(range(len(arms)), row.values, color="0.75", lw=1, zorder=1)
    pal = arm_palette(arms)
    for i, arm in enumerate(arms):
        ax.scatter([i] * len(wide), wide[arm], color=pal[arm], zorder=2, s=22)
        ax.hlines(wide[arm].mean(), i - 0.2, i + 0.2, color="k", lw=2, zorder=3)
    ax.set_xticks(range(len(arms)), arms)
    ax.set_xlim(-0.5, len(arms) - 0.5)
    ax.set_ylabel(metric)
    ax.set_title(title or f"{metric} per seed")
    return ax


style()
