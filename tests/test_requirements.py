"""The deployment's requirements: each bounded above, the experimental AzureML fine-tuning API held to the minor
version the tests run, and the same lines as pyproject.toml's dependencies."""

from __future__ import annotations

import re
import tomllib
from importlib.metadata import version
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]


def requirements() -> list[Requirement]:
    lines = (ROOT / "requirements.txt").read_text().splitlines()
    return [Requirement(line) for line in lines if line.strip() and not line.startswith("#")]


def test_every_requirement_is_bounded_above() -> None:
    unbounded = [str(r) for r in requirements()
                 if not any(s.operator in ("<", "<=", "~=", "==") for s in r.specifier)]
    assert unbounded == []


def test_the_azureml_sdk_is_held_to_the_minor_version_the_tests_run() -> None:
    [azure_ml] = [r for r in requirements() if r.name == "azure-ai-ml"]
    installed = Version(version("azure-ai-ml"))
    assert installed in azure_ml.specifier
    assert Version(f"{installed.major}.{installed.minor + 1}") not in azure_ml.specifier


def test_the_installed_versions_are_allowed_and_pyproject_says_the_same() -> None:
    for requirement in requirements():
        assert Version(version(requirement.name)) in requirement.specifier, requirement
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    normal = {re.sub(r"\s+", "", str(Requirement(line))) for line in project}
    assert normal == {re.sub(r"\s+", "", str(r)) for r in requirements()}
