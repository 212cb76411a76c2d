"""The reliability suite's figures: each scenario records what it measured; the committed figures.json must match.

`DISTILL_UPDATE_FIGURES=1 pytest tests/reliability` rewrites figures.json from what the run measured instead.
"""

from __future__ import annotations

import json
import os

import pytest
from reliability_helpers import COLUMNS, FIGURES

UPDATING = os.environ.get("DISTILL_UPDATE_FIGURES") == "1"


class Figures:
    """Counts per scenario, checked against (or written to) figures.json."""

    def __init__(self) -> None:
        self.committed: dict[str, dict[str, int]] = json.loads(FIGURES.read_text()) if FIGURES.exists() else {}
        self.measured: dict[str, dict[str, int]] = {}

    def record(self, scenario: str, **counts: int) -> None:
        unknown = set(counts) - set(COLUMNS)
        assert not unknown, f"unknown figure {unknown}"
        row = {column: int(counts.get(column, 0)) for column in COLUMNS}
        assert scenario not in self.measured, f"scenario {scenario!r} recorded twice"
        self.measured[scenario] = row
        if not UPDATING:
            assert self.committed.get(scenario) == row, (
                f"{scenario}: measured {row}, figures.json says {self.committed.get(scenario)}; if the change is "
                "intended, run the suite with DISTILL_UPDATE_FIGURES=1 and update the README table")

    def write(self) -> None:
        merged = {**self.committed, **self.measured}
        FIGURES.write_text(json.dumps(dict(sorted(merged.items())), indent=1) + "\n")


_FIGURES = Figures()


@pytest.fixture(scope="session")
def figures() -> Figures:
    return _FIGURES


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if UPDATING and _FIGURES.measured:
        _FIGURES.write()
