"""The dashboard in a real browser: headless Chromium from Debian's packages, driven by Selenium through Debian's
chromedriver (nothing is downloaded at test time). `make test` installs both when they are missing and it runs as root.

The run writes screenshots of both pages to docs/screenshots/, which the README shows.
"""

from __future__ import annotations

import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dashboard_jobs import CONTAINER, HOSTILE, finished_job, running_job

from shared.dashboard.server import dashboard_server
from shared.jobs.blobs import update_json
from shared.storage.local import LocalBlobStore

ROOT = Path(__file__).resolve().parents[1]
SCREENSHOTS = ROOT / "docs" / "screenshots"
CHROMIUM = shutil.which("chromium")
DRIVER = shutil.which("chromedriver")
WIDTH = 1280


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not (CHROMIUM and DRIVER):
        pytest.skip("Chromium is missing: apt-get install chromium chromium-driver (`make test` does, as root)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed: pip install selenium")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     f"--window-size={WIDTH},900", "--force-device-scale-factor=1", "--hide-scrollbars",
                     "--font-render-hinting=none"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=DRIVER))
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


@pytest.fixture
def site(browser: Any, tmp_path: Path) -> Iterator[tuple[LocalBlobStore, str]]:
    """`distill ui`'s server over a finished job and a job still labelling (and the browser's console emptied)."""
    browser.get_log("browser")
    store = LocalBlobStore(tmp_path / "storage")
    finished_job(store)
    running_job(store)
    server = dashboard_server(store, CONTAINER, 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield store, f"http://127.0.0.1:{server.server_port}/"
    server.shutdown()
    server.server_close()


def by_css(driver: Any, selector: str) -> list[Any]:
    from selenium.webdriver.common.by import By

    return driver.find_elements(By.CSS_SELECTOR, selector)


def wait_for(driver: Any, condition: Any, seconds: float = 15) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, seconds, poll_frequency=0.1).until(condition)


def problems(driver: Any) -> list[str]:
    """What the page's console reported as errors (a script blocked by the content policy, a failed request...)."""
    return [entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def screenshot(driver: Any, name: str) -> None:
    """The whole page, at the test window's width."""
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(WIDTH, max(600, min(height, 4000)))
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(SCREENSHOTS / name))
    driver.set_window_size(WIDTH, 900)


def test_the_list_shows_a_finished_and_a_running_job(browser: Any, site: tuple[LocalBlobStore, str]) -> None:
    _, address = site
    browser.get(address)
    rows = {row.find_element("css selector", "a").text: row.text for row in by_css(browser, "table.jobs tbody tr")}
    assert set(rows) == {"nli-finished", "math-running"}
    assert "succeeded" in rows["nli-finished"] and "10 of 10 rows labelled" in rows["nli-finished"]
    assert "labeling" in rows["math-running"] and "25 of 85 rows labelled" in rows["math-running"]
    assert problems(browser) == []
    screenshot(browser, "dashboard-jobs.png")


def test_the_running_jobs_progress_bar_advances_without_a_reload(browser: Any,
                                                                  site: tuple[LocalBlobStore, str]) -> None:
    store, address = site
    browser.get(address + "jobs/math-running")
    bar = by_css(browser, "#progress")[0]
    assert bar.get_attribute("value") == "25"
    browser.execute_script("window.sameDocument = 42")  # gone if the page were loaded again
    paths = running_job(store, done=(0, 1, 3))
    wait_for(browser, lambda driver: by_css(driver, "#progress")[0].get_attribute("value") == "60")
    assert by_css(browser, "#progress-text")[0].text == "60 of 85 rows labelled (71%)"
    assert "3 of 4 shards done" in by_css(browser, "#stage")[0].text
    update_json(store, paths.status, lambda record: {**record, "state": "failed", "errors": ["stopped by a test"]})
    wait_for(browser, lambda driver: by_css(driver, "#ended")[0].is_displayed())
    assert by_css(browser, "#state")[0].text == "failed"
    assert browser.execute_script("return window.sameDocument") == 42
    assert problems(browser) == []


def test_a_reply_with_markup_shows_as_text(browser: Any, site: tuple[LocalBlobStore, str]) -> None:
    _, address = site
    browser.get(address + "jobs/nli-finished")
    cells = [cell.text for cell in by_css(browser, "table.rejected td")]
    assert f"The answer is {HOSTILE}" in cells
    assert "I cannot tell </td></tr></table><h1>big</h1>" in cells
    assert browser.execute_script("return window.pwned === undefined") is True
    assert [heading.text for heading in by_css(browser, "h1")] == ["nli-finished succeeded"]
    assert problems(browser) == []
    screenshot(browser, "dashboard-job.png")


def test_the_charts_load(browser: Any, site: tuple[LocalBlobStore, str]) -> None:
    _, address = site
    browser.get(address + "jobs/nli-finished")
    image = by_css(browser, "img#report-chart")[0]
    wait_for(browser, lambda driver: driver.execute_script("return arguments[0].complete", image))
    assert browser.execute_script("return arguments[0].naturalWidth", image) > 100
    assert len(by_css(browser, "svg.loss polyline")) == 2


@pytest.mark.parametrize("job", ["..%2F..%2Fetc%2Fpasswd", "a.b", "..%5Cwindows"])
def test_a_job_id_with_path_characters_is_refused(browser: Any, site: tuple[LocalBlobStore, str], job: str) -> None:
    _, address = site
    browser.get(address + f"jobs/{job}")
    assert by_css(browser, "h1")[0].text == "Not a job id"
    assert "is not a job id" in by_css(browser, "p.problem")[0].text
