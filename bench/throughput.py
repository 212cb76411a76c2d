"""Throughput at the teacher's rate limit.

2,000 rows through `distill run` (a fresh process, the real local pipeline) against the test teacher limited to
600 requests a minute (token bucket, burst of 10 s worth: 100) with exponentially distributed latency, mean 300 ms,
over real HTTP. The run is given `--rpm 600`, as a user who knows the deployment's limit would.

Figure: rows labelled per minute during labelling / 600, and the share of teacher requests answered 429.
Target: >= 0.95 with <= 2% answered 429.
"""

from __future__ import annotations

import argparse

from bench.common import distill, job_record, run_args, workspace, write_rows
from shared.tasks import Task
from shared.testkit.limits import ExponentialLatency, ServerRateLimit
from shared.testkit.teacher import FakeTeacher

RPM = 600


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--no-rpm", action="store_true", help="do not tell the run the limit: adaptive only")
    parser.add_argument("--no-limit-headers", action="store_true",
                        help="the teacher sends no x-ratelimit-* headers, only 429s with retry-after")
    args = parser.parse_args(argv)
    train_rows = args.rows * 9 // 10
    with workspace("throughput") as folder:
        train = write_rows(folder / "train.jsonl", train_rows, seed=1)
        validation = write_rows(folder / "validation.jsonl", args.rows - train_rows, seed=2)
        limit = ServerRateLimit(RPM, burst=RPM / 6, report_limit=not args.no_limit_headers)
        with FakeTeacher(task=Task.NLI, rate_limit=limit, random_latency=ExponentialLatency(0.3, seed=7)) as teacher:
            extra = [] if args.no_rpm else ["--rpm", str(RPM)]
            wall, _ = distill(folder, *run_args(train, validation, teacher.base_url, "--no-cache", *extra))
            requests, refused = teacher.requests_total, limit.refused
        record = job_record(folder)
    timings = record["timings"]
    labelling = timings["labeling_finished"] - timings["labeling_started"]
    rows = record["accepted"]["train"] + record["accepted"]["validation"] + record["rejected"]
    per_minute = rows / labelling * 60
    print(f"rows {rows} ({record['rejected']} rejected), labelling {labelling:.1f} s, whole run {wall:.1f} s, "
          f"teacher requests {requests}, answered 429: {refused}")
    print(f"throughput: {per_minute / RPM:.3f} of {RPM} rows/min ({per_minute:.0f} rows/min), "
          f"429 share {refused / requests:.2%}")


if __name__ == "__main__":
    main()
