"""The report on fixed inputs: one row per claim, figures embedded, contract enforced."""

import base64
import json
import shutil

import pytest

from replikit import report

CLAIM = {
    "id": "toy.gain",
    "paper": "Doe et al. 2020",
    "quote": "Toy beats baseline.",
    "metric": "acc",
    "baseline": "base",
    "treatment": "toy",
    "effect": 0.1,
    "ci_low": 0.05,
    "ci_high": 0.15,
    "n_seeds": 5,
    "delta": 0.02,
    "delta_reason": "two points",
    "paper_value": {"base": 0.5, "toy": 0.7},
    "verdict": "reproduced",
    "treatment_mean": 0.8,
    "baseline_mean": 0.7,
    "note": "a note",
    "comparison": "toy vs base",
    "kind": "superiority",
    "stop": "decided at look 1 of 3",
    "margin": 2.5,
    "paper_source": "Table 1, row Toy",
}
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)


def write(results, method, claims, profile="default", git="abc", machine=None):
    folder = results / method
    (folder / "figures").mkdir(parents=True)
    (folder / "figures" / "curves.png").write_bytes(PNG)
    verdict = {
        "method": method,
        "profile": profile,
        "evidence": profile != "smoke",
        "claims": claims,
        "runtime_s": 12.3,
        "device": "cpu",
        "versions": {"torch": "x"},
        "git": git,
        **({"machine": machine} if machine else {}),
        "figures": ["figures/curves.png"],
    }
    (folder / "verdict.json").write_text(json.dumps(verdict))


def test_report_rows_figures_and_provenance(tmp_path):
    results = tmp_path / "results"
    write(results, "toy", [CLAIM], machine={"cpu": "X", "cpu_capability": "AVX2", "cores": 2, "gpu": "none"})
    write(
        results,
        "other",
        [
            {
                **CLAIM,
                "id": "other.c",
                "effect": -0.01,
                "ci_low": -0.05,
                "ci_high": 0.03,
                "verdict": "inconclusive",
            }
        ],
        profile="smoke",
        git="def-dirty",
    )
    md, page = report.build(results, tmp_path / "reports", tmp_path)
    text = md.read_text()
    assert "- methods' commits: `def-dirty (other); abc (toy)`" in text  # each method's own commit
    assert "- methods' machines: `not recorded (other); X (AVX2, 2 cores) (toy)`" in text
    assert "1 reproduced, 0 not reproduced, 1 inconclusive of 2 claims." in text
    assert (
        "| toy.gain | toy vs base on acc | base 0.5, toy 0.7 | 0.800 vs 0.700 | "
        "+0.100 [+0.050, +0.150] (n=5) | decided at look 1 of 3 | > 0.02 | +2.5 | reproduced | 12 s | cpu |"
    ) in text
    assert "delta 0.02: two points." in text and "Paper's numbers: Table 1, row Toy." in text
    assert "| inconclusive (smoke: no evidence) |" in text
    assert "![toy curves](../results/toy/figures/curves.png)" in text
    assert "> Toy beats baseline." in text and "params hash" in text
    html = page.read_text()
    assert text.index("## other") < text.index("## toy")  # alphabetical without params.yaml
    (tmp_path / "params.yaml").write_text("methods: [toy, other]\n")
    md, page = report.build(results, tmp_path / "reports", tmp_path)
    assert md.read_text().index("## toy") < md.read_text().index("## other")  # params.yaml's order
    assert (
        html.count("data:image/png;base64,") == 2
        and "<td class='verdict reproduced'><span>reproduced</span></td>" in html
    )
    assert "src='../" not in html  # self-contained
    write(results, "third", [{**CLAIM, "id": "third.c"}], git="def-dirty")
    md, _ = report.build(results, tmp_path / "reports", tmp_path)
    assert "- methods' commits: `abc (toy); def-dirty (other, third)`" in md.read_text()  # params.yaml order
    same = tmp_path / "same"
    write(same, "a", [{**CLAIM, "id": "a.c"}])
    write(same, "b", [{**CLAIM, "id": "b.c"}])
    md, _ = report.build(same, tmp_path / "reports-same", tmp_path)
    assert "- methods' commits: `abc (all 2 methods)`" in md.read_text()


def test_skipped_claims_show_their_reason_and_no_sentinel_arm(tmp_path):
    results = tmp_path / "results"
    derived = {
        **CLAIM,
        "id": "toy.trend",
        "baseline": None,
        "comparison": "slope per seed",
        "treatment_mean": None,
        "baseline_mean": None,
    }
    skipped = {
        **CLAIM,
        "id": "toy.gone",
        "verdict": "skipped",
        "reason": "arm 'x' did not run",
        "effect": None,
        "ci_low": None,
        "ci_high": None,
        "n_seeds": 0,
    }
    write(results, "toy", [derived, skipped])
    text = report.build(results, tmp_path / "reports", tmp_path)[0].read_text()
    assert "| toy.trend | slope per seed on acc | base 0.5, toy 0.7 | - |" in text and "none" not in text
    assert "| skipped: arm 'x' did not run |" in text and "1 skipped of 2 claims" in text
    write(tmp_path / "bad", "toy", [{**skipped, "reason": ""}])
    with pytest.raises(ValueError, match="a skipped claim needs its reason"):
        report.build(tmp_path / "bad", tmp_path / "reports", tmp_path)


def test_readme_results_table_is_generated_and_current():
    """The README's results table is the report's, from the committed verdict files: never typed, never stale."""
    from conftest import ROOT

    params = report.yaml.safe_load((ROOT / "params.yaml").read_text())
    verdicts = report.read_verdicts(ROOT / "results", params["methods"])
    text = (ROOT / "README.md").read_text()
    section = text.split(report.README_START, 1)[1].split(report.README_END, 1)[0]
    assert section.strip() == report.readme_table(verdicts).strip(), (
        "README results table is stale: run `python -m replikit.report --readme`"
    )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"verdict": "probably"}, "Input should be 'reproduced'"),
        ({"effect": None}, "toy.gain: a judged claim needs an effect"),
    ],
    ids=["unknown_verdict", "judged_without_effect"],
)
def test_report_rejects_a_verdict_off_contract(tmp_path, change, message):
    results = tmp_path / "results"
    write(results, "toy", [{**CLAIM, **change}])
    with pytest.raises(ValueError, match="does not follow the verdict contract") as err:
        report.build(results, tmp_path / "reports", tmp_path)
    assert message in str(err.value)


def test_staging_and_old_folders_stay_out_of_the_report(tmp_path):
    """A swap's folders beside ``results/toy/`` (its staging ``.toy.next-…``, the record set aside
    ``.toy.old-…``) hold verdicts too: the report lists toy once, from ``toy/``."""
    results = tmp_path / "results"
    write(results, "toy", [CLAIM])
    for leftover in (".toy.old-1-1.00", ".toy.next-2-2.00"):
        shutil.copytree(results / "toy", results / leftover)
    md, page = report.build(results, tmp_path / "reports", tmp_path)
    text = md.read_text()
    assert text.count("## toy") == 1 and "of 1 claims." in text
    assert page.read_text().count("<h2 id='toy'>") == 1


def test_report_escapes_the_quote_and_names_the_gpu(tmp_path):
    """The HTML shows a quote's markup as text, and the machine line names the GPU a run drew on."""
    results = tmp_path / "results"
    machine = {"cpu": "X", "cpu_capability": "AVX2", "cores": 2, "gpu": "NVIDIA X"}
    write(results, "toy", [{**CLAIM, "quote": "Toy <b>beats</b> baseline."}], machine=machine)
    md, page = report.build(results, tmp_path / "reports", tmp_path)
    html = page.read_text()
    assert "<blockquote>Toy &lt;b&gt;beats&lt;/b&gt; baseline.<br>" in html and "<b>" not in html
    assert "- methods' machines: `X (AVX2, 2 cores), NVIDIA X (toy)`" in md.read_text()
    assert "<li>methods&#x27; machines: <code>X (AVX2, 2 cores), NVIDIA X (toy)</code></li>" in html


def test_empty_results_give_a_hint(tmp_path):
    md, _ = report.build(tmp_path / "results", tmp_path / "reports", tmp_path)
    assert "No results yet" in md.read_text()


def test_readme_table_only_takes_what_dvc_repro_computes_from_params_yaml(tmp_path, monkeypatch, capsys):
    """A smoke run, a pilot run or a --set run written to results/ must not reach the README's table."""
    from conftest import ROOT

    params = report.yaml.safe_load((ROOT / "params.yaml").read_text())
    committed = report.read_verdicts(ROOT / "results", params["methods"])
    assert report.off_params(ROOT, committed) == []

    for name in ("params.yaml", "README.md"):
        (tmp_path / name).write_text((ROOT / name).read_text())
    results = tmp_path / "results"
    (results / "task_arithmetic").mkdir(parents=True)
    original = json.loads((ROOT / "results" / "task_arithmetic" / "verdict.json").read_text())

    def off(**changes) -> list[str]:
        (results / "task_arithmetic" / "verdict.json").write_text(json.dumps({**original, **changes}))
        return report.off_params(tmp_path, report.read_verdicts(results, ["task_arithmetic"]))

    assert off() == []
    assert off(profile="smoke", evidence=False) == ["task_arithmetic (smoke: no evidence)"]
    pilot = {"evidence": False, "seeds": {"role": "pilot", "base": 0}}
    assert off(**pilot) == ["task_arithmetic (pilot seeds: no evidence)"]
    [other] = off(config_hash="0123456789ab")
    assert other.startswith("task_arithmetic (config 0123456789ab, params.yaml resolves to ")

    monkeypatch.chdir(tmp_path)
    readme = (tmp_path / "README.md").read_text()
    assert report.main(["--readme"]) == 2
    assert "README.md left as it was" in capsys.readouterr().err
    assert (tmp_path / "README.md").read_text() == readme
