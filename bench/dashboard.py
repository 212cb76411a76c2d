"""Dashboard pages at scale: 1,000 jobs, one of them with 100,000 rejected rows.

The jobs are written into a local storage folder as the pipeline writes them; `distill ui`'s server answers over real
HTTP. Figure: the median time to answer each page (of 7 requests after one warm-up): the first and the last page of the
job list, the job's page at its first rejected rows and at its last ones, and its `progress.json`.
Target: every page in <= 100 ms, and the last pages no slower than the first by more than half (paging costs the same
wherever it lands).
"""

from __future__ import annotations

import json
import statistics
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from shared.dashboard.reading import REJECTED_PAGE_BYTES
from shared.dashboard.server import dashboard_server
from shared.jobs.blobs import dumps
from shared.jobs.paths import JobPaths
from shared.jobs.record import JobRecord, JobState
from shared.storage.local import LocalBlobStore

JOBS = 1_000
REJECTED = 100_000
CONTAINER = "jobs"
BIG = "job-0000"


def fill(store: LocalBlobStore) -> int:
    """The jobs, and the big job's rejected rows; the size of its rejected.jsonl."""
    for n in range(JOBS):
        job = f"job-{n:04d}"
        record = JobRecord(job=job, state=JobState.SUCCEEDED if n % 3 else JobState.LABELING, created=1.8e9 + n,
                           updated=1.8e9 + n + 60, task="NLI", shards=40, shards_done=list(range(n % 40)),
                           rows={"total": 2000, "train": 1800, "validation": 200, "per_shard": 50})
        if n == 0:
            record.accepted, record.rejected = {"train": 1, "validation": 1}, REJECTED
            record.rejected_by_reason = {"invalid_label": REJECTED // 2, "no_answer": REJECTED - REJECTED // 2}
        store.write(JobPaths(CONTAINER, job).status, dumps(record.to_json()))
    lines = (json.dumps({"id": f"{i:064x}-0", "split": "train", "source": "train.jsonl", "line": i + 1,
                         "reason": "invalid_label" if i % 2 else "no_answer", "detail": "not one of the labels",
                         "excerpt": f"The relation between the premise and hypothesis {i} is probably maybe."}) + "\n"
             for i in range(REJECTED))
    data = "".join(lines).encode()
    store.write(JobPaths(CONTAINER, BIG).file("rejected.jsonl"), data)
    return len(data)


def timed(url: str) -> float:
    """Median milliseconds to fetch `url` whole."""
    def once() -> float:
        started = time.perf_counter()
        with urllib.request.urlopen(url) as response:
            response.read()
        return (time.perf_counter() - started) * 1000

    once()
    return statistics.median(once() for _ in range(7))


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="distill-bench-dashboard-") as tmp:
        store = LocalBlobStore(Path(tmp) / "storage")
        started = time.perf_counter()
        size = fill(store)
        print(f"wrote {JOBS:,} jobs and {REJECTED:,} rejected rows ({size / 2**20:.1f} MiB) in "
              f"{time.perf_counter() - started:.1f} s")
        server = dashboard_server(store, CONTAINER, 0)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        root = f"http://127.0.0.1:{server.server_port}/"
        last_rows = max(0, size - REJECTED_PAGE_BYTES // 2)  # an offset inside the last page's rows
        pages = {"job list, page 1": root, f"job list, page {JOBS // 50}": f"{root}?page={JOBS // 50}",
                 "job page, first rejected rows": f"{root}jobs/{BIG}",
                 "job page, last rejected rows": f"{root}jobs/{BIG}?rejected={last_rows}",
                 "progress.json": f"{root}jobs/{BIG}/progress.json"}
        figures = {name: timed(url) for name, url in pages.items()}
        server.shutdown()
        server.server_close()
    for name, ms in figures.items():
        print(f"{name}: {ms:.1f} ms")
    slowest = max(figures.values())
    print(f"dashboard: slowest page {slowest:.1f} ms (target <= 100 ms); last rejected rows / first: "
          f"{figures['job page, last rejected rows'] / figures['job page, first rejected rows']:.2f}")


if __name__ == "__main__":
    main()
