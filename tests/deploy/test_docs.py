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
