"""constraints.txt: every dependency pinned, within pyproject.toml's ranges, at the results' versions."""

import json
import re
import tomllib

from conftest import ROOT
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version


def pins() -> dict[str, Version]:
    out = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, version = re.fullmatch(r"([A-Za-z0-9._-]+)==(\S+)", line).groups()
            out[canonicalize_name(name)] = Version(version)
    return out


def test_every_dependency_is_pinned_within_its_range():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = [*project["dependencies"]] + [
        r for extra in project["optional-dependencies"].values() for r in extra
    ]
    locked = pins()
    for spec in map(Requirement, wanted):
        name = canonicalize_name(spec.name)
        assert name in locked, f"{spec.name} is in pyproject.toml but not pinned: run `make lock`"
        assert locked[name] in spec.specifier, f"constraints.txt pins {name}=={locked[name]}, outside {spec}"


def test_the_pins_are_the_versions_the_committed_results_were_computed_with():
    locked = pins()
    verdicts = sorted((ROOT / "results").glob("*/verdict.json"))
    assert verdicts
    for path in verdicts:
        recorded = json.loads(path.read_text())["versions"]
        for pkg, version in recorded.items():
            if pkg in ("python", "replikit"):
                continue
            assert Version(version) == locked[canonicalize_name(pkg)], (
                f"{path.parent.name} ran with {pkg} {version}, constraints.txt pins {locked[canonicalize_name(pkg)]}"
            )
