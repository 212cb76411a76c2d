"""The README's reliability table shows exactly the figures the suite measured (figures.json, which every scenario
checks its own counts against)."""

from __future__ import annotations

import json
from pathlib import Path

from reliability_helpers import FIGURES, figures_table

README = Path(__file__).resolve().parents[2] / "README.md"


def test_the_readme_table_is_the_measured_figures() -> None:
    figures = json.loads(FIGURES.read_text())
    readme = README.read_text(encoding="utf-8")
    assert readme.count("\n## Reliability\n") == 1
    section = readme.split("\n## Reliability\n", 1)[1].split("\n## ", 1)[0]
    expected = figures_table(figures)
    assert expected in section, f"README.md's reliability table is not figures.json; it should read:\n{expected}"
    assert len(figures) == 24 and all(row["rows_lost"] == row["rows_duplicated"] == row["crashes"] == 0
                                      for row in figures.values())
