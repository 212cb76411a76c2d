"""The dashboard's routes and pages (shared.dashboard), the app's sign-in gate in front of them, and `distill ui`.

The pages are checked as HTML here; tests/test_dashboard_browser.py drives them in Chromium.
"""

from __future__ import annotations

import json
import re
import runpy
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from functools import cache
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import azure.functions as func
import pytest
from dashboard_jobs import CONTAINER, HOSTILE, REJECTED, finished_job, running_job

from shared import redaction, services
from shared.dashboard import reading, routes
from shared.dashboard.pages import inline_json
from shared.dashboard.routes import respond
from shared.jobs.paths import JobPaths
from shared.jobs.record import JobRecord, JobState
from shared.ports import Blob
from shared.queueing.local import LocalQueue
from shared.services import Services
from shared.storage.local import LocalBlobStore

ROOT = Path(__file__).resolve().parents[1]


class Counting(LocalBlobStore):
    """A local store that counts what a page reads."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.reads: list[str] = []
        self.range_bytes = 0
        self.listed: list[str] = []

    def read(self, path: str) -> Blob | None:
        self.reads.append(path)
        return super().read(path)

    def read_range(self, path: str, offset: int, length: int) -> bytes | None:
        data = super().read_range(path, offset, length)
        self.range_bytes += len(data or b"")
        return data

    def list(self, prefix: str):
        self.listed.append(prefix)
        return super().list(prefix)


@pytest.fixture
def store(tmp_path: Path) -> Counting:
    return Counting(tmp_path / "storage")


def get(store: LocalBlobStore, path: str, **query: str) -> routes.Response:
    return respond(store, CONTAINER, path, query)


def html(response: routes.Response) -> str:
    assert response.content_type.startswith("text/html")
    return response.body.decode()


class Texts(HTMLParser):
    """The text of a page as a browser would show it, and its elements."""

    def __init__(self) -> None:
        super().__init__()
        self.text: list[str] = []
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parsed(page: str) -> Texts:
    texts = Texts()
    texts.feed(page)
    return texts


# ---- the job list --------------------------------------------------------------------------------------------------

def test_the_list_shows_each_job_with_its_state_progress_and_counts(store: Counting) -> None:
    finished_job(store)
    running_job(store, done=(0, 3))
    page = html(get(store, ""))
    shown = " ".join(parsed(page).text)
    assert re.search(r"nli-finished\s+succeeded\s+NLI\s+10 of 10 rows labelled \(100%\)\s+80\.0%\s+12,710", shown)
    assert re.search(r"math-running\s+labeling\s+MATH\s+35 of 85 rows labelled \(41%\)\s+—\s+—", shown)  # 25 + 10
    assert '<a href="jobs/math-running">' in page and '<a href="jobs/nli-finished">' in page
    assert "2026-11-30 00:53:20 UTC" in shown and "2026-11-30 01:18:20 UTC" in shown  # started, last change (UTC)


def test_the_list_is_paged_and_reads_one_record_per_job_shown(store: Counting) -> None:
    for n in range(120):
        running_job(store, f"job-{n:03d}")
    store.write(f"{CONTAINER}/_active/job-000", b"{}")  # bookkeeping beside the jobs is no job
    store.reads.clear()
    first = html(get(store, ""))
    assert first.count('<tr><td><a href="jobs/') == 50 and "job-049" in first and "job-050" not in first
    assert sorted(store.reads) == [f"{CONTAINER}/job-{n:03d}/status.json" for n in range(50)]
    assert store.listed == []  # one folder listing, no walk over the jobs' blobs
    last = html(get(store, "", page="3"))
    assert last.count('<tr><td><a href="jobs/') == 20 and "page 3 of 3" in last and 'rel="next"' not in last
    assert 'href="?page=2"' in last
    assert "page 3 of 3" in html(get(store, "", page="99"))  # past the end: the last page
    assert "page 1 of 3" in html(get(store, "", page="x"))  # not a number: the first


def test_a_job_without_a_readable_record_is_still_listed(store: Counting) -> None:
    store.write(f"{CONTAINER}/half-made/manifest.json", b"{}")
    store.write(f"{CONTAINER}/broken/status.json", b"{not json")
    shown = " ".join(parsed(html(get(store, ""))).text)
    assert "broken unknown" in shown and "half-made unknown" in shown


def test_no_jobs_says_so(store: Counting) -> None:
    assert "No jobs yet." in html(get(store, ""))


# ---- a job's page ---------------------------------------------------------------------------------------------------

def test_a_finished_job_shows_rejections_losses_scores_chart_and_files(store: Counting) -> None:
    finished_job(store)
    page = html(get(store, "jobs/nli-finished"))
    shown = " ".join(parsed(page).text)
    assert re.search(r"invalid_label\s+1\s+no_answer\s+1", shown)  # counts under the codes as written
    assert re.search(r"row-1\s+train\.jsonl:3\s+invalid_label", shown)
    assert re.search(r"row-2\s+validation\.jsonl:7\s+no_answer", shown)
    assert '<svg class="loss"' in page and page.count("<polyline") == 2  # train and eval losses
    assert re.search(r"teacher\s+0\.900\s+base student\s+0\.250\s+distilled student\s+0\.850", shown)
    assert '<img id="report-chart" src="nli-finished/files/report.png"' in page
    files = re.findall(r'href="nli-finished/files/([^"]+)" download', page)
    assert files == ["train.jsonl", "validation.jsonl", "rejected.jsonl", "report.md", "report.png", "status.json"]
    data = json.loads(re.search(r'<script type="application/json" id="job-data">(.*?)</script>', page).group(1))
    assert data == {"progress": "nli-finished/progress.json", "final": True, "interval_ms": 2000}


def test_job_content_is_text_wherever_it_appears(store: Counting) -> None:
    finished_job(store)
    page = html(get(store, "jobs/nli-finished"))
    assert "<script>window" not in page and "<img src=x" not in page and "<h1>big" not in page
    assert page.count("<script") == 2  # the inline JSON and the page's own script, nothing from the job
    shown = "".join(parsed(page).text)
    assert HOSTILE in shown and "</td></tr></table><h1>big</h1>" in shown  # shown as the text it is
    assert sum(tag == "img" for tag, _ in parsed(page).tags) == 1  # the chart only


def test_inline_json_cannot_end_its_script_element() -> None:
    value = {"job": "</script><script>alert(1)</script>", "amp": "&", "line": "\u2028"}
    encoded = inline_json(value)
    assert "<" not in encoded and ">" not in encoded and "&" not in encoded and "\u2028" not in encoded
    assert json.loads(encoded) == value


def test_a_running_job_polls_its_progress(store: Counting) -> None:
    running_job(store, done=(0, 1))
    page = html(get(store, "jobs/math-running"))
    assert '<progress id="progress" value="50" max="85">' in page
    assert "labeling: 2 of 4 shards done (85 rows), teacher paced at 600 calls/min (headers)" in page
    assert '"final": false' in page and 'src="../static/dashboard.js"' in page
    progress = json.loads(get(store, "jobs/math-running/progress.json").body)
    assert progress["done"] == 50 and progress["total"] == 85 and progress["state"] == "labeling"
    assert progress["final"] is False


def test_a_local_job_that_nothing_runs_shows_as_interrupted(store: Counting) -> None:
    finished_job(store)
    running_job(store)
    idle = lambda job: False  # noqa: E731 (no `distill run` holds any job)
    listed = " ".join(parsed(respond(store, CONTAINER, "", {}, idle).body.decode()).text)
    assert "math-running labeling (interrupted)" in listed and "nli-finished succeeded" in listed
    page = respond(store, CONTAINER, "jobs/math-running", {}, idle).body.decode()
    assert "interrupted: no `distill run` is running it (the same command with --job math-running continues it)" \
        in page
    progress = json.loads(respond(store, CONTAINER, "jobs/math-running/progress.json", {}, idle).body)
    assert progress["interrupted"] is True
    assert "interrupted" not in html(respond(store, CONTAINER, "jobs/math-running", {}, lambda job: True))
    assert "interrupted" not in html(get(store, "jobs/math-running"))  # the app cannot tell, and never says so


def test_rows_labelled_count_the_rows_sent_to_the_teacher() -> None:
    record = JobRecord(job="j", state=JobState.CANCELLED, created=0, rows={"total": 100, "per_shard": 50},
                       accepted={"train": 30, "validation": 5}, rejected=65,
                       rejected_by_reason={"cancelled": 60, "invalid_label": 5})
    assert (reading.progress(record).done, reading.progress(record).total) == (40, 100)
    failed = JobRecord(job="j", state=JobState.FAILED, created=0, rows={"total": 10})
    assert reading.progress(failed).done == 0


def test_rejected_rows_page_through_a_large_file_in_bounded_reads(store: Counting) -> None:
    rows = [{**REJECTED[n % 2], "id": f"row-{n}", "line": n + 1} for n in range(2000)]
    finished_job(store, rejected=rows)
    seen: list[str] = []
    offset: int | None = 0
    while offset is not None:
        store.range_bytes = 0
        page = reading.rejected_page(store, CONTAINER, "nli-finished", offset)
        assert page is not None and store.range_bytes <= reading.REJECTED_PAGE_BYTES + 2  # and a byte either side
        seen += [row["id"] for row in page.rows]
        offset = page.next
    assert seen == [f"row-{n}" for n in range(2000)]  # every row once, in order
    second = reading.rejected_page(store, CONTAINER, "nli-finished", reading.rejected_page(
        store, CONTAINER, "nli-finished", 0).next)
    assert second is not None and second.rows[0]["id"] != "row-0"
    page = html(get(store, "jobs/nli-finished", rejected=str(second.offset)))
    assert f'from byte {second.offset:,}' in page and 'href="nli-finished#rejected">← first rows' in page


def test_an_offset_inside_a_line_starts_at_the_next_line(store: Counting) -> None:
    paths = finished_job(store)
    first_line = len(json.dumps(REJECTED[0])) + 1
    page = reading.rejected_page(store, CONTAINER, paths.job, 5)
    assert page is not None and [row["id"] for row in page.rows] == ["row-2"] and page.offset == first_line
    assert page.next is None


def test_a_line_longer_than_a_page_and_an_unreadable_line_are_shown(store: Counting) -> None:
    paths = finished_job(store)
    long_row = {**REJECTED[0], "id": "long", "excerpt": "x" * (reading.REJECTED_PAGE_BYTES * 2)}
    store.write(paths.file("rejected.jsonl"), (json.dumps(long_row) + "\nnot json\n").encode())
    first = reading.rejected_page(store, CONTAINER, paths.job, 0)
    assert first is not None and [row["id"] for row in first.rows] == ["long"]
    second = reading.rejected_page(store, CONTAINER, paths.job, first.next or 0)
    assert second is not None and second.rows == [{"unreadable": "not json"}] and second.next is None
    assert "unreadable line" in html(get(store, "jobs/nli-finished", rejected=str(first.next)))


def test_a_job_not_yet_assembled_has_no_rejected_rows_to_show(store: Counting) -> None:
    running_job(store)
    assert reading.rejected_page(store, CONTAINER, "math-running", 0) is None
    assert "Rejections" not in html(get(store, "jobs/math-running"))


def test_the_pages_read_azure_blob_storage_alike(azurite_connection_string: str) -> None:
    """The app's pages over Azure Blob Storage (Azurite): the same list, job page, rejected rows and downloads."""
    from shared.storage.azure_blob import AzureBlobStore

    store = AzureBlobStore.from_connection_string(azurite_connection_string)
    container = f"d{uuid.uuid4().hex[:12]}"
    rows = [{**REJECTED[n % 2], "id": f"row-{n}"} for n in range(600)]
    paths = finished_job(store, rejected=rows, container=container)
    running_job(store, container=container)
    listed = " ".join(parsed(respond(store, container, "", {}).body.decode()).text)
    assert "math-running labeling" in listed and "nli-finished succeeded" in listed
    page = respond(store, container, "jobs/nli-finished", {}).body.decode()
    assert "row-0" in page and '<img id="report-chart"' in page and page.count("<polyline") == 2
    seen, offset = [], 0
    while offset is not None:
        rejected = reading.rejected_page(store, container, "nli-finished", offset)
        seen += [row["id"] for row in rejected.rows]
        offset = rejected.next
    assert seen == [f"row-{n}" for n in range(600)]
    download = respond(store, container, "jobs/nli-finished/files/rejected.jsonl", {})
    assert download.body == store.read(paths.file("rejected.jsonl")).data


# ---- what the routes refuse -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("job", ["..", "a.b", "..%2F..%2Fetc", "a b", "%00", "-starts-with-dash", "x" * 256, "é"])
def test_a_job_id_with_path_characters_is_refused(store: Counting, job: str) -> None:
    finished_job(store)
    for suffix in ("", "/progress.json", "/files/train.jsonl"):
        response = get(store, f"jobs/{job}{suffix}")
        assert response.status == 400 and "is not a job id" in html(response)
    assert store.reads == []


@pytest.mark.parametrize(("path", "status"), [
    ("jobs/nli-finished/files/manifest.json", 404),  # not one of the files a job's page offers
    ("jobs/nli-finished/files/..", 404),
    ("jobs/nli-finished/files/evaluation.jsonl", 404),  # offered, but this job has none
    ("jobs/nli-finished/other", 404),
    ("jobs/nli-finished/progress.json/x", 404),
    ("jobs/missing", 404),
    ("static/../routes.py", 404),
    ("nothing", 404),
    ("jobs", 404),
])
def test_unknown_paths_are_not_found(store: Counting, path: str, status: int) -> None:
    finished_job(store)
    assert get(store, path).status == status


def test_downloads_are_attachments_and_the_chart_an_image(store: Counting) -> None:
    paths = finished_job(store)
    rejected = get(store, "jobs/nli-finished/files/rejected.jsonl")
    assert rejected.status == 200 and rejected.body == store.read(paths.file("rejected.jsonl")).data
    assert rejected.all_headers()["Content-Disposition"] == 'attachment; filename="nli-finished-rejected.jsonl"'
    png = get(store, "jobs/nli-finished/files/report.png")
    assert png.content_type == "image/png" and png.body.startswith(b"\x89PNG")


def test_a_file_too_large_for_a_page_points_to_distill_download(store: Counting,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    finished_job(store)
    monkeypatch.setattr(routes, "MAX_DOWNLOAD", 10)
    response = get(store, "jobs/nli-finished/files/rejected.jsonl")
    assert response.status == 413 and "distill download nli-finished" in html(response)


def test_every_answer_carries_the_security_headers(store: Counting) -> None:
    finished_job(store)
    for path in ("", "jobs/nli-finished", "jobs/..", "static/dashboard.js", "jobs/nli-finished/files/report.png"):
        headers = get(store, path).all_headers()
        assert "script-src 'self'" in headers["Content-Security-Policy"]
        assert headers["X-Content-Type-Options"] == "nosniff"
    assert get(store, "static/dashboard.css").content_type.startswith("text/css")


def test_no_secret_appears_in_any_page(store: Counting) -> None:
    secret = "sk-live-0123456789abcdef"
    redaction.remember(secret)
    rows = [{**REJECTED[0], "excerpt": f"my key is {secret}", "detail": secret}]
    finished_job(store, rejected=rows)
    paths = JobPaths(CONTAINER, "nli-finished")
    record = json.loads(store.read(paths.status).data)
    record["errors"] = [f"the teacher refused {secret}"]
    store.write(paths.status, json.dumps(record).encode())  # written around the redaction, as a user might
    for path in ("", "jobs/nli-finished"):
        page = html(get(store, path))
        assert secret not in page
    assert "my key is ***" in html(get(store, "jobs/nli-finished"))


# ---- the app: Entra ID sign-in in front of the same routes ----------------------------------------------------------

@pytest.fixture
def app_services(store: Counting, tmp_path: Path) -> Services:
    installed = Services(store=store, queue=LocalQueue(tmp_path / "queue.db"), finetuner=None,  # type: ignore[arg-type]
                         environ={"WEBSITE_AUTH_ENABLED": "True"})
    services.install(installed)
    yield installed
    services.install(None)


@cache
def app_functions() -> dict[str, Any]:
    """The app's functions, from function_app.py run afresh (the SDK lists an app's functions once)."""
    return {f.get_function_name(): f for f in runpy.run_path(str(ROOT / "function_app.py"))["app"].get_functions()}


def call_app(url: str, path: str, headers: dict[str, str] | None = None) -> func.HttpResponse:
    function = app_functions()["dashboard"]
    request = func.HttpRequest("GET", url, headers=headers or {}, route_params={"path": path}, body=b"")
    return function.get_user_function()(request)


SIGNED_IN = {"X-MS-CLIENT-PRINCIPAL-ID": "00000000-0000-0000-0000-000000000001"}


def test_the_app_serves_the_same_pages_to_a_signed_in_person(app_services: Services) -> None:
    finished_job(app_services.store)
    response = call_app("https://app.example/api/dashboard/jobs/nli-finished", "jobs/nli-finished", SIGNED_IN)
    assert response.status_code == 200 and response.headers["Content-Type"] == routes.HTML
    assert response.get_body() == get(app_services.store, "jobs/nli-finished").body
    assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]
    listed = call_app("https://app.example/api/dashboard/", "", SIGNED_IN)
    assert b'href="jobs/nli-finished"' in listed.get_body()


def test_the_app_sends_anyone_not_signed_in_to_sign_in(app_services: Services) -> None:
    response = call_app("https://app.example/api/dashboard/jobs/nli-finished?rejected=10", "jobs/nli-finished")
    assert response.status_code == 302
    assert response.headers["Location"] == \
        "/.auth/login/aad?post_login_redirect_uri=/api/dashboard/jobs/nli-finished%3Frejected%3D10"


def test_the_app_refuses_to_serve_without_app_service_authentication(app_services: Services) -> None:
    app_services.environ = {}
    response = call_app("https://app.example/api/dashboard/", "", SIGNED_IN)  # a header anyone could send
    assert response.status_code == 403 and b"dashboardClientId" in response.get_body()


def test_the_dashboard_root_gets_its_trailing_slash(app_services: Services) -> None:
    response = call_app("https://app.example/api/dashboard", "", SIGNED_IN)
    assert response.status_code == 301 and response.headers["Location"] == "/api/dashboard/"


def test_the_app_declares_the_dashboard_route_anonymous_and_the_status_route_keyed() -> None:
    http = {name: b.get_dict_repr() for name, f in app_functions().items()
            for b in f.get_bindings() if b.get_dict_repr()["type"] == "httpTrigger"}
    assert {name: (str(b["route"]), str(b["authLevel"].value)) for name, b in http.items()} == {
        "status": ("jobs/{job}", "function"), "dashboard": ("dashboard/{*path}", "anonymous")}


# ---- distill ui -----------------------------------------------------------------------------------------------------

def test_distill_ui_serves_this_machines_jobs_on_loopback(tmp_path: Path) -> None:
    home = tmp_path / "home"
    finished_job(LocalBlobStore(home / "storage"))
    server = subprocess.Popen([sys.executable, "-m", "shared.cli", "ui", "--port", "0"], cwd=ROOT, text=True,
                              env={"PATH": "/usr/bin:/bin", "DISTILL_HOME": str(home)}, stdout=subprocess.PIPE)
    try:
        line = server.stdout.readline()
        address = re.search(r"http://127\.0\.0\.1:\d+/", line).group(0)
        with urllib.request.urlopen(address) as response:
            assert b'href="jobs/nli-finished"' in response.read()
        with urllib.request.urlopen(address + "jobs/nli-finished/progress.json") as response:
            assert json.loads(response.read())["final"] is True
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(address + "jobs/..%2F..%2Fetc%2Fpasswd")
        assert refused.value.code == 400
        busy = subprocess.run([sys.executable, "-m", "shared.cli", "ui", "--port", address.rsplit(":", 1)[1][:-1]],
                              cwd=ROOT, text=True, capture_output=True, env={"DISTILL_HOME": str(home)}, timeout=60)
        assert busy.returncode == 2 and "is in use: give another with --port" in busy.stderr
    finally:
        server.terminate()
        server.wait(10)


def test_the_progress_json_is_small(store: Counting) -> None:
    running_job(store)
    assert len(get(store, "jobs/math-running/progress.json").body) < 300
