"""The figures' error bars: the judge's t-interval, not a bootstrap."""

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pandas as pd
from scipy import stats

from replikit import plots


def test_t95_is_the_t_interval_of_the_mean():
    v = [0.61, 0.64, 0.58, 0.66, 0.63]
    lo, hi = plots.t95(v)
    ref = stats.t.interval(0.95, len(v) - 1, loc=np.mean(v), scale=stats.sem(v))
    assert np.allclose((lo, hi), ref)
    assert plots.t95([0.5]) == (0.5, 0.5)  # one seed: a point, not a crash
    assert np.allclose(plots.t95([1.0, np.nan, 3.0]), stats.t.interval(0.95, 1, loc=2.0, scale=1.0))


def test_seaborn_draws_the_t95_band():
    data = pd.DataFrame({"x": [0, 0, 0, 1, 1, 1], "y": [1.0, 2.0, 3.0, 2.0, 3.0, 4.0]})
    ax = plots.sns.lineplot(data, x="x", y="y", errorbar=plots.t95)
    band = ax.collections[0].get_paths()[0].vertices[:, 1]
    half = stats.t.ppf(0.975, 2) * 1.0 / np.sqrt(3)
    assert np.isclose(band.min(), 2.0 - half) and np.isclose(band.max(), 3.0 + half)
    plots.plt.close("all")
