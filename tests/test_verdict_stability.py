"""benchmarks/verdict_stability.py: a second draw's verdicts against the first, claim by claim."""

import json

from conftest import benchmark, commit, sh

stability = benchmark("verdict_stability")


def claim(cid, verdict, n=4, lo=0.01, hi=0.05):
    return {"id": cid, "verdict": verdict, "n_seeds": n, "ci_low": lo, "ci_high": hi}


def test_statuses_and_interval_overlap():
    a = {
        c["id"]: c
        for c in [
            claim("m.same", "reproduced"),
            claim("m.flip", "reproduced"),
            claim("m.once", "inconclusive", 8, -0.01, 0.03),
            claim("m.open", "inconclusive", 8, -0.02, 0.02),
            claim("m.gone", "reproduced"),
            claim("m.skip", "skipped", 0, None, None),
        ]
    }
    b = {
        c["id"]: c
        for c in [
            claim("m.same", "reproduced", 6, 0.04, 0.08),
            claim("m.flip", "not_reproduced", 4, -0.05, -0.02),
            claim("m.once", "reproduced", 8, 0.0, 0.04),
            claim("m.open", "inconclusive", 8, -0.03, 0.01),
            claim("m.skip", "skipped", 0, None, None),
        ]
    }
    rows = {r["claim"]: r for r in stability.compare(a, b)}
    assert {k: r["status"] for k, r in rows.items()} == {
        "m.same": "same",
        "m.flip": "FLIP",
        "m.once": "decided once",
        "m.open": "same",
        "m.gone": "decided once",  # absent under B: never counted as agreeing
        "m.skip": "same",
    }
    assert {k: r["overlap"] for k, r in rows.items()} == {
        "m.same": "yes",  # [0.01, 0.05] and [0.04, 0.08]
        "m.flip": "no",
        "m.once": "yes",
        "m.open": "yes",
        "m.gone": "-",
        "m.skip": "-",
    }
    assert rows["m.same"]["B"] == "reproduced (n=6)"
    text = stability.table(list(rows.values()), "t", "draws")
    assert (
        "1 of 2 claims decided under both draws agree; 3 of 6 claims decided under A; 1 flips; "
        "2 decided once; 3 of 4 intervals overlap." in text
    )
    assert "| m.flip | reproduced (n=4) | not_reproduced (n=4) | FLIP | no |" in text


def test_against_a_commit_compares_results_with_the_verdicts_committed_there(tmp_path, monkeypatch, capsys):
    def verdict(claims):
        return json.dumps({"claims": claims})

    (tmp_path / "results" / "m").mkdir(parents=True)
    (tmp_path / "params.yaml").write_text("seeds: {confirmation: 2}\nmethods: [m, new]\n")
    (tmp_path / "results" / "m" / "verdict.json").write_text(
        verdict([claim("m.c", "inconclusive", 8, -1, 1)])
    )
    sh("git", "init", "-q", cwd=tmp_path)
    commit(tmp_path, "first draw")
    rev = sh("git", "rev-parse", "HEAD", cwd=tmp_path).strip()
    # a rerun elsewhere: m decided this time, and a method the commit does not have
    (tmp_path / "results" / "m" / "verdict.json").write_text(verdict([claim("m.c", "reproduced", 8)]))
    (tmp_path / "results" / "new").mkdir()
    (tmp_path / "results" / "new" / "verdict.json").write_text(verdict([claim("new.c", "reproduced")]))

    assert stability.committed(rev, "m", root=tmp_path)["m.c"]["verdict"] == "inconclusive"
    assert stability.committed(rev, "new", root=tmp_path) is None
    monkeypatch.setattr(stability, "ROOT", tmp_path)
    assert stability.main(["--against", rev]) == 0
    out = capsys.readouterr()
    assert "| m.c | reproduced (n=8) | inconclusive (n=8) | decided once | yes |" in out.out
    assert "new: no results/new/verdict.json at" in out.err and "new.c" not in out.out
    assert not (tmp_path / "reports").exists()  # --against only prints

    # a smoke run in results/ is another run, not another draw of the committed one
    smoke = {"profile": "smoke", "config_hash": "b", "claims": [claim("m.c", "reproduced", 2)]}
    sh("git", "add", "-A", cwd=tmp_path)
    (tmp_path / "results" / "m" / "verdict.json").write_text(json.dumps({**smoke, "profile": "default"}))
    commit(tmp_path, "with profile and config")
    (tmp_path / "results" / "m" / "verdict.json").write_text(json.dumps(smoke))
    assert stability.main(["--against", "HEAD", "--methods", "m"]) == 0
    out = capsys.readouterr()
    assert "m: another setup, not another draw (profile smoke/default); left out" in out.err
    assert "| m.c |" not in out.out
    assert stability.main(["--against", "nonexist"]) == 2
    assert "--against nonexist: not a git revision here" in capsys.readouterr().err
