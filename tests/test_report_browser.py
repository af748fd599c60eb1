"""The report in a real browser: headless Chromium loads reports/report.html, every method's section is
there, every figure decodes, and nothing is wider than the window.

Needs a Chromium or Chrome binary (``.ci/run`` installs Debian's ``chromium`` when it can); without one
the tests are skipped, and pytest's summary (``-ra``) prints why.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess

import pytest

from replikit import report

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
BROWSER = os.environ.get("REPLIKIT_BROWSER") or next(filter(None, map(shutil.which, BROWSERS)), None)
pytestmark = pytest.mark.skipif(
    BROWSER is None,
    reason=f"no browser found (looked for {', '.join(BROWSERS)} on PATH and $REPLIKIT_BROWSER): "
    "install one, e.g. `apt-get install chromium`, to check the report in a browser",
)

WIDTH, HEIGHT = 1280, 900

# appended to a copy of the page: once everything has loaded, write what we check into the DOM
CHECK = """<script>
addEventListener("load", () => {
  const root = document.documentElement;
  const images = [...document.images];
  const wide = [...document.body.querySelectorAll("*")]
    .filter(n => n.getBoundingClientRect().right > root.clientWidth + 0.5
                 || (n.clientWidth > 0 && n.scrollWidth > n.clientWidth + 1))  // text running out of its box
    .map(n => n.tagName.toLowerCase() + (n.id ? "#" + n.id : ""));
  const out = {
    sections: [...document.querySelectorAll("h2[id]")].map(h => h.id),
    images: images.length,
    broken: images.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.alt),
    scrollWidth: root.scrollWidth, clientWidth: root.clientWidth, wide: wide.slice(0, 10),
  };
  const pre = document.createElement("pre");
  pre.id = "replikit-check";
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>"""


def chromium(*args: str) -> str:
    # --no-sandbox: Chromium refuses to start as root (containers, CI) with its sandbox on
    cmd = [
        BROWSER,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        f"--window-size={WIDTH},{HEIGHT}",
        "--virtual-time-budget=10000",
        *args,
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def check_in_browser(page, tmp_path) -> dict:
    probe = tmp_path / "probe.html"
    probe.write_text(page.read_text().replace("</body>", CHECK + "</body>"))
    dom = chromium("--dump-dom", probe.as_uri())
    found = re.search(r'<pre id="replikit-check">(.*?)</pre>', dom, flags=re.S)
    assert found, f"the check did not run:\n{dom[-2000:]}"
    return json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&"))


def assert_renders(page, methods, n_figures, tmp_path) -> None:
    seen = check_in_browser(page, tmp_path)
    assert seen["sections"] == methods
    assert seen["images"] == n_figures and seen["broken"] == []
    assert seen["scrollWidth"] <= seen["clientWidth"] == WIDTH, f"wider than the window: {seen['wide']}"


def figure_png(path, width_in: float) -> None:
    """A figure the size the notebooks make (their widest are 11 in at 110 dpi)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(width_in, 3.8))
    ax.plot([0, 1, 2], [0.2, 0.8, 0.6])
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def test_report_renders_in_a_browser(tmp_path):
    from test_report import CLAIM

    results = tmp_path / "results"
    long_quote = "A claim quoted at length, as papers' abstracts are. " * 12
    for method, claim_id in (
        ("toy", "toy.gain"),
        ("other", "other.a_rather_long_claim_identifier_without_spaces"),
    ):
        folder = results / method
        (folder / "figures").mkdir(parents=True)
        figure_png(folder / "figures" / "curves.png", 11)
        figure_png(folder / "figures" / "paired.png", 5.5)
        claim = {**CLAIM, "id": claim_id, "quote": long_quote, "note": "x" * 300}
        verdict = {
            "method": method,
            "profile": "default",
            "evidence": True,
            "claims": [claim],
            "runtime_s": 1.0,
            "device": "cpu",
            "versions": {},
            "git": "abc",
            "figures": ["figures/curves.png", "figures/paired.png"],
        }
        (folder / "verdict.json").write_text(json.dumps(verdict))
    (tmp_path / "params.yaml").write_text("methods: [toy, other]\n")
    _, page = report.build(results, tmp_path / "reports", tmp_path)
    assert_renders(page, ["toy", "other"], 4, tmp_path)


@pytest.mark.slow
def test_smoke_report_renders_in_a_browser(smoke_repo, tmp_path):
    """The report `dvc repro` built from real smoke-profile results (ELR: three figures)."""
    verdict = json.loads((smoke_repo / "results" / "elr" / "verdict.json").read_text())
    assert_renders(smoke_repo / "reports" / "report.html", ["elr"], len(verdict["figures"]), tmp_path)
