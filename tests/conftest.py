"""Suite-wide rules.

Under CI=true a skipped test fails, so a missing service or missing `../shared` data can never pass unnoticed.
Only tests marked `live` (they need real cloud credentials, which CI does not have) may skip there.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
from pathlib import Path

import pytest
from azurite import azurite_connection_string  # noqa: F401  (a session fixture: Azurite, started on first use)

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


_OWN_MODEL_CACHE: list[str] = []


def pytest_configure(config: pytest.Config) -> None:
    """One model cache for the whole run, so each packaged model is converted once (unless one is given); and Ctrl-C
    for the commands the tests start, even when the suite itself runs in the background.

    A shell starts a background command (`make test &`, nohup) with SIGINT ignored, and its children inherit that: a
    Python child then never raises KeyboardInterrupt, and the tests that press Ctrl-C on a `distill` command would wait
    for it in vain. A signal with a handler is reset to its default in a child, so handling it here restores Ctrl-C
    for them.
    """
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if not os.environ.get("DISTILL_MODEL_CACHE"):
        _OWN_MODEL_CACHE.append(tempfile.mkdtemp(prefix="distill-models-"))
        os.environ["DISTILL_MODEL_CACHE"] = _OWN_MODEL_CACHE[0]


def pytest_unconfigure(config: pytest.Config) -> None:
    for folder in _OWN_MODEL_CACHE:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):
    outcome = yield
    report = outcome.get_result()
    if IN_CI and report.skipped and item.get_closest_marker("live") is None and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.longrepr = f"skipped under CI=true, which is a failure here: {reason}"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The read-only datasets beside the checkout (`../shared/data`)."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"{SHARED_DATA} is missing")
    return SHARED_DATA


@pytest.fixture(autouse=True)
def fresh_rate_limiters() -> None:
    """Each test starts with no learned pace: the process's limiters are keyed by job and teacher URL, and tests
    reuse job ids and, now and then, a port another test's teacher had."""
    from shared.teacher.ratelimit import LIMITERS

    LIMITERS.clear()
