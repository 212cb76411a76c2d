"""The suite's own rule: under CI=true a skip is a failure (unless the test is marked live)."""

import subprocess
import sys
import textwrap
from pathlib import Path

CONFTEST = Path(__file__).with_name("conftest.py")


def run_pytest(tmp_path: Path, body: str, ci: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "conftest.py").write_text(CONFTEST.read_text())
    (tmp_path / "azurite.py").write_text(CONFTEST.with_name("azurite.py").read_text())
    (tmp_path / "test_sample.py").write_text(textwrap.dedent(body))
    (tmp_path / "pytest.ini").write_text("[pytest]\nmarkers =\n    live: cloud\n")
    env = {"PATH": "/usr/bin:/bin", "CI": ci}
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
                          capture_output=True, text=True, env=env, cwd=tmp_path)


SKIPPING = """
    import pytest

    def test_needs_service():
        pytest.skip("no service")

    @pytest.mark.live
    def test_live():
        pytest.skip("no credentials")
"""


def test_a_skip_fails_under_ci(tmp_path: Path) -> None:
    result = run_pytest(tmp_path, SKIPPING, ci="true")
    assert result.returncode == 1, result.stdout
    assert "1 failed, 1 skipped" in result.stdout


def test_a_skip_is_a_skip_outside_ci(tmp_path: Path) -> None:
    result = run_pytest(tmp_path, SKIPPING, ci="")
    assert result.returncode == 0, result.stdout
    assert "2 skipped" in result.stdout
