"""Throughput at the teacher's rate limit.

Rows through `distill run` (a fresh process, the real local pipeline) against the test teacher limited to 600
requests a minute (a token bucket) with exponentially distributed latency, mean 300 ms, over real HTTP. Scenarios:

- `--rpm 600` given, as a user who knows the deployment's limit would (2,000 rows, burst 100: the default);
- `--no-rpm`: the limit is read from the teacher's `x-ratelimit-limit-requests` header;
- `--no-rpm --no-limit-headers`: nothing states the limit, only 429s with `retry-after` tell of it; with `--burst 20`
  (two seconds' worth) or the default 100;
- `--rise` (with `--no-rpm --no-limit-headers`): the limit starts at 300 a minute and rises to 600 after two minutes.

Figures: calls the teacher let through per minute during labelling / its limit (measured at the teacher), and the
share of teacher requests answered 429; for `--rise`, the same for the second minute after the rise and from then on.
Targets: >= 0.95 with <= 2% answered 429 when the limit is known; >= 0.90 with <= 3% when only 429s tell of it, and
>= 0.85 of the new limit within two minutes of a rise.
"""

from __future__ import annotations

import argparse
import threading

from bench.common import distill, job_record, run_args, workspace, write_rows
from shared.tasks import Task
from shared.testkit.limits import ExponentialLatency, ServerRateLimit
from shared.testkit.teacher import FakeTeacher

RPM = 600
RISE_FROM = 300
RISE_AFTER = 120.0  # seconds


def share(answered: list[float], start: float, end: float, rpm: float) -> float:
    """Calls let through between `start` and `end`, per minute, as a share of `rpm`."""
    return sum(start <= t < end for t in answered) / (end - start) * 60 / rpm


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, help="rows to label (default 2,000; 1,000 with --no-limit-headers; "
                        "2,400 with --rise)")
    parser.add_argument("--no-rpm", action="store_true", help="do not tell the run the limit: adaptive only")
    parser.add_argument("--no-limit-headers", action="store_true",
                        help="the teacher sends no x-ratelimit-* headers, only 429s with retry-after")
    parser.add_argument("--burst", type=float, default=RPM / 6, help="the teacher's bucket size (default 100)")
    parser.add_argument("--rise", action="store_true", help=f"the limit starts at {RISE_FROM} a minute and rises "
                        f"to {RPM} after {RISE_AFTER:g} s")
    args = parser.parse_args(argv)
    rows = args.rows or (2400 if args.rise else 1000 if args.no_limit_headers else 2000)
    train_rows = rows * 9 // 10
    with workspace("throughput") as folder:
        train = write_rows(folder / "train.jsonl", train_rows, seed=1)
        validation = write_rows(folder / "validation.jsonl", rows - train_rows, seed=2)
        limit = ServerRateLimit(RISE_FROM if args.rise else RPM, burst=args.burst,
                                report_limit=not args.no_limit_headers)
        rise = threading.Timer(RISE_AFTER, limit.change, args=(RPM,))
        with FakeTeacher(task=Task.NLI, rate_limit=limit, random_latency=ExponentialLatency(0.3, seed=7)) as teacher:
            extra = [] if args.no_rpm or args.rise else ["--rpm", str(RPM)]
            if args.rise:
                rise.start()
            try:
                wall, _ = distill(folder, *run_args(train, validation, teacher.base_url, "--no-cache", *extra))
            finally:
                rise.cancel()
            requests, refused, answered = teacher.requests_total, limit.refused, limit.answered_at
        record = job_record(folder)
    labelled = record["accepted"]["train"] + record["accepted"]["validation"] + record["rejected"]
    start, end = answered[0], answered[-1]
    print(f"rows {labelled} ({record['rejected']} rejected), labelling {end - start:.1f} s at the teacher, whole run "
          f"{wall:.1f} s, teacher requests {requests}, answered 429: {refused}, pace {record.get('pace')}")
    if args.rise:
        rose = limit.changed_at or start + RISE_AFTER
        print(f"after the rise: {share(answered, rose + 60, rose + 120, RPM):.3f} of {RPM}/min in its second minute, "
              f"{share(answered, rose + 60, end, RPM):.3f} from then on; 429 share {refused / requests:.2%}")
        return
    print(f"throughput: {share(answered, start, end, RPM):.3f} of {RPM}/min, 429 share {refused / requests:.2%}")


if __name__ == "__main__":
    main()
