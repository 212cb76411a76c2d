"""Pipeline overhead per row.

5,000 rows through `distill validate` and `distill run --no-finetune --no-cache` (fresh processes, the real local
pipeline: validation, ingest, the queue, labelling over real HTTP, aggregation and assembly) against the test teacher
answering at once. Process start-up is included.

Figure: wall time per row. Target: <= 5 ms per row.
"""

from __future__ import annotations

import argparse

from bench.common import distill, job_record, run_args, workspace, write_rows
from shared.tasks import Task
from shared.testkit.teacher import FakeTeacher


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=5000)
    args = parser.parse_args(argv)
    train_rows = args.rows * 9 // 10
    with workspace("overhead") as folder:
        train = write_rows(folder / "train.jsonl", train_rows, seed=1)
        validation = write_rows(folder / "validation.jsonl", args.rows - train_rows, seed=2)
        with FakeTeacher(task=Task.NLI) as teacher:
            validating, _ = distill(folder, "validate", "--task", "nli", str(train), str(validation))
            running, _ = distill(folder, *run_args(train, validation, teacher.base_url, "--no-cache"))
            requests = teacher.requests_total
        record = job_record(folder)
    rows = record["accepted"]["train"] + record["accepted"]["validation"] + record["rejected"]
    assert rows == args.rows == requests, (rows, requests)
    total = validating + running
    print(f"rows {rows}: validate {validating:.2f} s, run {running:.2f} s, teacher requests {requests}")
    print(f"overhead: {total / rows * 1000:.2f} ms per row")


if __name__ == "__main__":
    main()
