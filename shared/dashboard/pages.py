"""The dashboard's HTML, rendered on the server and readable without JavaScript (the script only refreshes the
progress bar). Every piece of job content goes through `text` (or `inline_json`), so it shows as text, never as HTML.

Links are relative, so the same pages work at `/` under `distill ui` and under the app's route prefix in Azure:
`root` is the way back to the dashboard's root from the page (`""` on the job list, `"../"` on a job's page).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping
from html import escape
from typing import Any
from urllib.parse import quote

from shared.dashboard.chart import loss_svg
from shared.dashboard.reading import JobProgress, JobsPage, RejectedPage, Running, progress
from shared.evaluation import ROLES
from shared.jobs.record import JobRecord
from shared.report import LABELS, Curve

EXCERPT_CHARS = 240
POLL_MS = 2000  # how often a running job's page asks for its progress


def text(value: Any) -> str:
    """Job content as HTML text (attribute-safe too)."""
    return escape("" if value is None else str(value), quote=True)


def inline_json(value: Any) -> str:
    """JSON to place inside a `<script type="application/json">` element: no `<`, `>` or `&` can end it early."""
    return (json.dumps(value, ensure_ascii=False).replace("&", "\\u0026").replace("<", "\\u003c")
            .replace(">", "\\u003e").replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))


def when(stamp: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(stamp)) if stamp else "—"


def page(title: str, root: str, body: str) -> str:
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{text(title)} · Distill</title>
<link rel="stylesheet" href="{root}static/dashboard.css">
<link rel="icon" href="{root}static/favicon.svg" type="image/svg+xml">
</head>
<body>
<header><a class="home" href="{root or './'}">Distill jobs</a></header>
<main>
{body}
</main>
<script src="{root}static/dashboard.js" defer></script>
</body>
</html>
"""


def message_page(status: int, title: str, detail: str, root: str = "") -> str:
    """An error page: what went wrong, in a sentence."""
    return page(title, root, f'<h1>{text(title)}</h1>\n<p class="problem" data-status="{status}">{text(detail)}</p>')


def bar(shown: JobProgress, *, ids: bool = False) -> str:
    """A progress bar with its count; `ids` marks the one the script refreshes."""
    attrs = (' id="progress"', ' id="progress-text"') if ids else ("", "")
    percent = f" ({shown.done / shown.total:.0%})" if shown.total else ""
    return (f'<progress{attrs[0]} value="{shown.done}" max="{max(shown.total, 1)}"></progress> '
            f'<span{attrs[1]}>{shown.done:,} of {shown.total:,} rows labelled{percent}</span>')


def state_badge(state: str, *, ids: bool = False, interrupted: bool = False) -> str:
    slug = state.replace(" ", "-")
    attr = ' id="state"' if ids else ""
    label = f"{state} (interrupted)" if interrupted else state
    return f'<span{attr} class="state state-{text(slug)}{" interrupted" * interrupted}">{text(label)}</span>'


def table(head: Iterable[str], rows: Iterable[Iterable[str]], cls: str = "") -> str:
    """A table of cells that are already HTML."""
    heads = "".join(f"<th>{cell}</th>" for cell in head)
    body = "\n".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    return f'<table class="{cls}"><thead><tr>{heads}</tr></thead>\n<tbody>\n{body}\n</tbody></table>'


def fact_list(facts: Mapping[str, Any]) -> str:
    """Named values as a definition list; those without a value are left out."""
    items = "".join(f"<dt>{name}</dt><dd>{text(value)}</dd>" for name, value in facts.items() if value)
    return f'<dl class="facts">{items}</dl>'


# ---- the job list ---------------------------------------------------------------------------------------------------

def jobs_list(listing: JobsPage, running: Running | None = None) -> str:
    rows = [_job_row(job, running) for job in listing.jobs]
    if rows:
        shown = table(["Job", "State", "Task", "Rows labelled", "Success ratio", "Tokens", "Started", "Last change"],
                      rows, "jobs")
    else:
        shown = '<p class="empty">No jobs yet.</p>'
    pager = _pager(listing.page, listing.pages, lambda n: f"?page={n}")
    return page("Jobs", "", f"<h1>Jobs <small>{listing.total:,}</small></h1>\n{shown}\n{pager}")


def _job_row(job: JobRecord | str, running: Running | None) -> list[str]:
    if isinstance(job, str):  # no readable record yet
        link = f'<a href="jobs/{quote(job)}">{text(job)}</a>'
        return [link, state_badge("unknown"), "", "", "", "", "", ""]
    shown = progress(job, running)
    tokens = job.tokens or {}
    spent = tokens.get("prompt", 0) + tokens.get("completion", 0)
    return [f'<a href="jobs/{quote(job.job)}">{text(job.job)}</a>', state_badge(shown.state,
                                                                                interrupted=shown.interrupted),
            text(job.task or ""),
            bar(shown), f"{job.success_ratio:.1%}" if job.success_ratio is not None else "—",
            f"{spent:,}" if job.tokens else "—", when(job.created), when(job.updated)]


def _pager(current: int, pages: int, href: Any) -> str:
    if pages <= 1:
        return ""
    back = f'<a rel="prev" href="{href(current - 1)}">← previous</a>' if current > 1 else ""
    on = f'<a rel="next" href="{href(current + 1)}">next →</a>' if current < pages else ""
    return f'<nav class="pager">{back} <span>page {current} of {pages}</span> {on}</nav>'


# ---- one job --------------------------------------------------------------------------------------------------------

def job_page(record: JobRecord, *, rejected: RejectedPage | None, curves: list[Curve], files: list[str],
             has_chart: bool, running: Running | None = None) -> str:
    shown = progress(record, running)
    job = quote(record.job)
    data = {"progress": f"{job}/progress.json", "final": shown.final, "interval_ms": POLL_MS}
    sections = [
        f"<h1>{text(record.job)} {state_badge(shown.state, ids=True, interrupted=shown.interrupted)}</h1>",
        fact_list({"Task": record.task, "Started": when(record.created), "Last change": when(record.updated),
                   "Trace id": record.trace_id}),
        f'<section class="progress">{bar(shown, ids=True)}\n<p id="stage">{text(shown.stage)}</p>'
        f'<p id="ended" class="ended" hidden>The job has ended: <a href="{job}">reload</a> for its results.</p>'
        "</section>",
        _results(record), _errors(record), _rejections(record, rejected), _finetune(record, curves),
        _evaluation(record, has_chart), _downloads(job, files),
        f'<script type="application/json" id="job-data">{inline_json(data)}</script>',
    ]
    return page(record.job, "../", "\n".join(part for part in sections if part))


def _results(record: JobRecord) -> str:
    if record.accepted is None:
        return ""
    tokens, cache = record.tokens or {}, record.cache or {}
    items = {"Accepted": f"{record.accepted.get('train', 0):,} train + {record.accepted.get('validation', 0):,} "
                         "validation",
             "Rejected": f"{record.rejected or 0:,}",
             "Success ratio": f"{record.success_ratio or 0:.1%}",
             "Tokens": f"{tokens.get('prompt', 0):,} prompt + {tokens.get('completion', 0):,} completion"}
    if cache.get("hits"):
        items["Cached replies"] = f"{cache['hits']:,}"
    if refs := record.references:
        items["Agrees with the references"] = f"{refs.get('agreed', 0):,} of {refs.get('checked', 0):,} rows"
    return f"<section><h2>Dataset</h2>{fact_list(items)}</section>"


def _errors(record: JobRecord) -> str:
    problems = [*record.errors, *([f"stopped: {record.reason}"] if record.reason else [])]
    if not problems:
        return ""
    items = "".join(f"<li>{text(problem)}</li>" for problem in problems)
    return f'<section class="errors"><h2>Errors</h2><ul>{items}</ul></section>'


def _rejections(record: JobRecord, rejected: RejectedPage | None) -> str:
    reasons = record.rejected_by_reason or {}
    if not reasons and not (rejected and rejected.rows):
        return ""
    gates = record.filtered or {}
    by_count = sorted(reasons.items(), key=lambda item: (-item[1], item[0]))
    counts = table(["Reason", "Rows"], [[f"<code>{text(reason)}</code>" + (" (a quality gate)" * (reason in gates)),
                                         f"{count:,}"] for reason, count in by_count], "reasons")
    sample = ""
    if rejected is not None:
        rows = [_rejected_row(row) for row in rejected.rows]
        here = f"rows from byte {rejected.offset:,} of rejected.jsonl" if rejected.offset else "the first rows"
        pager = []
        if rejected.offset:
            pager.append(f'<a href="{quote(record.job)}#rejected">← first rows</a>')
        if rejected.next is not None:
            pager.append(f'<a rel="next" href="{quote(record.job)}?rejected={rejected.next}#rejected">next rows →</a>')
        sample = (f"<h3>Rejected rows ({here})</h3>\n"
                  + table(["Row id", "File:line", "Reason", "Detail", "Reply excerpt"], rows, "rejected")
                  + f'\n<nav class="pager">{" ".join(pager)}</nav>')
    return f'<section id="rejected"><h2>Rejections</h2>\n{counts}\n{sample}</section>'


def _rejected_row(row: Mapping[str, Any]) -> list[str]:
    if "unreadable" in row:
        return ["", "", "<code>unreadable line</code>", "", f"<pre>{text(_cut(row['unreadable']))}</pre>"]
    return [f"<code>{text(row.get('id'))}</code>", text(f"{row.get('source', '')}:{row.get('line', '')}"),
            f"<code>{text(row.get('reason'))}</code>", text(_cut(row.get("detail") or "")),
            f"<pre>{text(_cut(row.get('excerpt') or ''))}</pre>"]


def _cut(value: Any) -> str:
    value = str(value)
    return value if len(value) <= EXCERPT_CHARS else value[:EXCERPT_CHARS - 1] + "…"


def _finetune(record: JobRecord, curves: list[Curve]) -> str:
    ft = record.finetune
    if ft is None:
        return ""
    items = {"Run": ft.name, "Status": ft.status or "not finished", "Model": ft.output_model,
             "Started": when(ft.started) if ft.started else None}
    chart = f'<figure class="chart">{loss_svg(curves)}</figure>' if curves else ""
    return f"<section><h2>Fine-tune</h2>{fact_list(items)}{chart}</section>"


def _evaluation(record: JobRecord, has_chart: bool) -> str:
    evaluation = record.evaluation or {}
    if not evaluation:
        return ""
    parts = ["<h2>Evaluation</h2>"]
    if error := evaluation.get("error"):
        parts.append(f'<p class="problem">Evaluation failed: {text(error)}</p>')
    if scores := evaluation.get("scores"):
        metric = text(evaluation.get("metric", "score"))
        rows = [[text(LABELS.get(role, role)), f"{scores[role]:.3f}"] for role in ROLES if role in scores]
        parts.append(f"<p>On {evaluation.get('rows', 0):,} validation rows.</p>")
        parts.append(table(["Model", metric], rows, "scores"))
    elif not evaluation.get("error"):
        parts.append("<p>The students are being evaluated.</p>")
    if has_chart:
        parts.append(f'<figure class="chart"><img id="report-chart" src="{quote(record.job)}/files/report.png" '
                     'alt="Scores of the teacher and the students, and the fine-tune loss"></figure>')
    return "<section>" + "\n".join(parts) + "</section>"


def _downloads(job: str, files: list[str]) -> str:
    if not files:
        return ""
    items = "".join(f'<li><a href="{job}/files/{quote(name)}" download>{text(name)}</a></li>' for name in files)
    return f'<section><h2>Files</h2><ul class="files">{items}</ul></section>'
