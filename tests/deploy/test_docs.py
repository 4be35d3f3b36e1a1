"""The README, .env.example and .ci/run stay true to the code."""

from __future__ import annotations

import dataclasses
import re

import pytest

from contract.settings import Settings
from tests.processes import ROOT

SETTINGS = sorted(f.name.upper() for f in dataclasses.fields(Settings))


@pytest.mark.parametrize("name", SETTINGS)
def test_every_setting_is_in_env_example_and_the_readme_with_its_default(name: str) -> None:
    example = re.search(rf"^{name}=(.*)$", (ROOT / ".env.example").read_text(), re.MULTILINE)
    assert example, f"{name} is missing from .env.example"
    assert Settings.from_env({name: example[1]}) == Settings(), (
        f"{name}: .env.example differs from the default"
    )
    assert re.search(rf"^\| `{name}` \|", (ROOT / "README.md").read_text(), re.MULTILINE), (
        f"{name} not in README"
    )


def test_ci_runs_exactly_the_readmes_test_command() -> None:
    readme = (ROOT / "README.md").read_text()
    command = re.search(r"^(make \w+)\s+# lint, types and every test", readme, re.MULTILINE)
    assert command, "the README's test command"
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert ci[-1] == command[1]


def test_every_test_the_freshness_table_cites_exists() -> None:
    readme = (ROOT / "README.md").read_text()
    table = readme[readme.index("## Freshness guarantee") : readme.index("## Settings")]
    cited = re.findall(r"`((?:tests/\w+/)?\w+\.py)::(\w+)`", table)
    assert len(cited) >= 9
    for path, name in cited:
        source = ROOT / (path if path.startswith("tests/") else f"tests/e2e/{path}")
        assert re.search(rf"^def {name}\(", source.read_text(), re.MULTILINE), f"{path}::{name}"
