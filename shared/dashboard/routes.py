"""The dashboard's routes, below its root, answered from the job blobs. The Functions app (functions/dashboard.py) and
`distill ui` (shared.dashboard.server) hand every request here, so both serve the very same pages:

    ""                           the jobs, a page at a time (`?page=N`)
    jobs/<job>                   a job's page (`?rejected=OFFSET` pages through its rejected rows)
    jobs/<job>/progress.json     how far the job is: what its page polls while it runs
    jobs/<job>/files/<name>      the job's dataset, rejections, record and evaluation files
    static/<name>                the pages' stylesheet, script and icon
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources

from shared.dashboard import pages
from shared.dashboard.reading import Running, jobs_page, loss_points, progress, read_record, rejected_page
from shared.jobs.blobs import evaluation_files
from shared.jobs.paths import JOB_ID_RULE, OUTPUTS, JobPaths, is_job_id
from shared.ports import BlobStore
from shared.redaction import redact
from shared.report import REPORT_FILES

ROUTES = ("", "jobs/{job}", "jobs/{job}/progress.json", "jobs/{job}/files/{name}", "static/{name}")
EVALUATION_FILES = ("evaluation.jsonl", *REPORT_FILES)
DOWNLOADS = (*OUTPUTS, *EVALUATION_FILES, "status.json")
TYPES = {".jsonl": "application/x-ndjson", ".json": "application/json", ".md": "text/markdown; charset=utf-8",
         ".png": "image/png", ".svg": "image/svg+xml", ".css": "text/css; charset=utf-8",
         ".js": "text/javascript; charset=utf-8"}
STATIC = ("dashboard.css", "dashboard.js", "favicon.svg")
MAX_DOWNLOAD = 64 * 1024 * 1024  # larger files are for `distill download` (or `--out`), not a page's link
HTML = "text/html; charset=utf-8"
# Scripts and styles from the dashboard itself only: inline markup in job content could not run even if it slipped
# through; no frames, no form posts elsewhere, no referrer leaving the page.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
                               "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    body: bytes
    content_type: str
    headers: Mapping[str, str] = field(default_factory=dict)

    def all_headers(self) -> dict[str, str]:
        return {**SECURITY_HEADERS, "Cache-Control": "no-store", **self.headers, "Content-Type": self.content_type}


def respond(store: BlobStore, container: str, path: str, query: Mapping[str, str],
            running: Running | None = None) -> Response:
    """The answer to a GET of `path` (below the dashboard's root, already URL-decoded) with its query parameters;
    `running` tells whether a job not over is being run (on this machine), so one that is not shows as interrupted."""
    parts = path.lstrip("/").split("/") if path.lstrip("/") else []
    if not parts:
        return _html(200, pages.jobs_list(jobs_page(store, container, _number(query.get("page"), 1)), running))
    if parts[0] == "static" and len(parts) == 2 and parts[1] in STATIC:
        return _static(parts[1])
    if parts[0] != "jobs" or len(parts) < 2:
        return problem(404, "Not found", f"The dashboard has no page {path!r}.", "")
    job, rest, root = parts[1], parts[2:], "../" * (len(parts) - 1)
    if not is_job_id(job):
        return problem(400, "Not a job id", f"{job!r} is not a job id: {JOB_ID_RULE}.", root)
    if len(rest) == 2 and rest[0] == "files":
        return _download(store, JobPaths(container, job), rest[1], root)
    if rest not in ([], ["progress.json"]):
        return problem(404, "Not found", f"The dashboard has no page {path!r}.", root)
    record = read_record(store, container, job)
    if record is None:
        return problem(404, "No such job", f"There is no job {job} (or it has no record yet).", root)
    if rest:
        return Response(200, redact(json.dumps(progress(record, running).to_json())).encode(), "application/json")
    evaluation = evaluation_files(store, JobPaths(container, job))
    files = [name for name in DOWNLOADS
             if name in evaluation or name == "status.json" or (name in OUTPUTS and record.accepted is not None)]
    body = pages.job_page(record, rejected=rejected_page(store, container, job, _number(query.get("rejected"), 0)),
                          curves=loss_points(store, container, job) if record.finetune else [], files=files,
                          has_chart="report.png" in evaluation, running=running)
    return _html(200, body)


def _number(value: str | None, default: int) -> int:
    """A page number or an offset from the query; the default for anything else."""
    return int(value) if value and value.isdigit() and len(value) < 16 else default


def _html(status: int, body: str) -> Response:
    return Response(status, redact(body).encode("utf-8"), HTML)


def problem(status: int, title: str, detail: str, root: str = "") -> Response:
    """An error page: what went wrong, in a sentence."""
    return _html(status, pages.message_page(status, title, detail, root))


def _static(name: str) -> Response:
    data = (resources.files("shared.dashboard") / "static" / name).read_bytes()
    return Response(200, data, TYPES["." + name.rsplit(".", 1)[1]], {"Cache-Control": "max-age=300"})


def _download(store: BlobStore, paths: JobPaths, name: str, root: str) -> Response:
    if name not in DOWNLOADS:
        return problem(404, "Not found", f"A job has no file {name!r} to download here.", root)
    data = store.read_range(paths.file(name), 0, MAX_DOWNLOAD + 1)
    if data is None:
        return problem(404, "No such file", f"Job {paths.job} has no {name} (yet).", root)
    if len(data) > MAX_DOWNLOAD:
        return problem(413, "Too large for the page",
                        f"{name} is larger than {MAX_DOWNLOAD // 2**20} MiB: `distill download {paths.job}` copies "
                        "the job's files from storage.", root)
    kind = TYPES["." + name.rsplit(".", 1)[1]]
    shown = "inline" if kind == "image/png" else f'attachment; filename="{paths.job}-{name}"'
    return Response(200, data, kind, {"Content-Disposition": shown})
