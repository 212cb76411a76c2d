"""Scale: validation, ingest and assembly of 100k and 1M generated rows, time and peak memory.

Each size runs in a fresh process over a local storage folder and the local queue:
validate (`validate_file`), ingest (the ingest handler: validation again, shards, one queue message per shard),
then assembly (`assemble`: shard inputs and results streamed into train/validation/rejected files). The teacher is
left out at this size: each shard's result blob is written directly with the answer the test teacher would give,
timed apart and not part of the figure (at ~3 ms a row over HTTP, 1M rows would take most of an hour on 2 cores).

Figure: seconds per stage and the process's peak RSS for each size. Target: time linear in rows, peak RSS < 300 MB
at 1M.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import ROOT, write_rows

SIZES = (100_000, 1_000_000)


def measure(rows: int) -> dict[str, float]:
    """One size, in this process: seconds per stage and peak RSS in MB."""
    from shared.jobs.blobs import dumps
    from shared.jobs.paths import JobPaths
    from shared.jobs.shards import decode_shard
    from shared.manifest.model import Manifest
    from shared.pipeline.aggregate import assemble
    from shared.pipeline.ingest import ingest
    from shared.pipeline.label import Labelled, shard_result
    from shared.queueing.local import LocalQueue
    from shared.services import Services
    from shared.settings import Settings
    from shared.storage.local import LocalBlobStore
    from shared.tasks import Task
    from shared.tasks.base import Accepted
    from shared.teacher.replies import Usage
    from shared.validation import validate_file

    figures: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="distill-bench-scale-") as tmp:
        folder = Path(tmp)
        train = write_rows(folder / "train.jsonl", rows, seed=1)
        figures["baseline_rss_mb"] = peak_mb()

        started = time.perf_counter()
        report = validate_file(train, Task.NLI, name="train.jsonl")
        figures["validate_s"] = time.perf_counter() - started
        assert report.errors == 0 and report.rows == rows, report.problems[:3]

        store = LocalBlobStore(folder / "storage")
        store.upload_from("input/job/train.jsonl", train)
        train.unlink()
        manifest = {"task": "nli", "training_file": "train.jsonl", "finetune": False,
                    "teacher": {"kind": "local", "model": "distill-test-teacher"}}
        store.write("input/job/manifest.json", dumps(manifest))
        with LocalQueue(folder / "queue.db") as queue:
            services = Services(store=store, queue=queue, finetuner=None, settings=Settings())  # type: ignore[arg-type]
            started = time.perf_counter()
            ingest(services, "input/job/manifest.json")
            figures["ingest_s"] = time.perf_counter() - started
            assert queue.counts("shards")["active"] > 0

        paths = JobPaths("jobs", "job")
        shards = json.loads(store.read(paths.plan).data)["shards"]
        started = time.perf_counter()
        answer = [Accepted("neutral", None)]
        for index in range(shards):
            results = [Labelled(row, split, answer, None, Usage(60, 1))
                       for split, row in decode_shard(store.read(paths.shard(index)).data)]
            store.write(paths.result(index), shard_result(index, results, 0))
        figures["results_s"] = time.perf_counter() - started

        job_manifest = Manifest.model_validate(json.loads(store.read(paths.manifest).data))
        started = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="distill-bench-assemble-") as scratch:
            counts, _ = assemble(services, paths, job_manifest, shards, Path(scratch))
        figures["assemble_s"] = time.perf_counter() - started
        assert counts["train"] + counts["validation"] == rows
    figures["peak_rss_mb"] = peak_mb()
    return figures


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="*", default=list(SIZES))
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # the child process: measure one size
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(measure(args.one)))
        return
    results = {}
    for rows in args.rows:
        out = subprocess.run([sys.executable, "-m", "bench.scale", "--one", str(rows)], cwd=ROOT, text=True,
                             capture_output=True, check=True).stdout
        results[rows] = json.loads(out.splitlines()[-1])
        r = results[rows]
        print(f"{rows:>9,} rows: validate {r['validate_s']:.1f} s, ingest {r['ingest_s']:.1f} s, "
              f"assemble {r['assemble_s']:.1f} s (results written without a teacher: {r['results_s']:.1f} s), "
              f"peak RSS {r['peak_rss_mb']:.0f} MB", flush=True)
    small, large = min(results), max(results)
    stages = ("validate_s", "ingest_s", "assemble_s")
    per_row = {n: sum(results[n][s] for s in stages) / n * 1e6 for n in (small, large)}
    print(f"scale: {per_row[small]:.1f} us/row at {small:,}, {per_row[large]:.1f} us/row at {large:,} "
          f"(ratio {per_row[large] / per_row[small]:.2f}); peak RSS {results[large]['peak_rss_mb']:.0f} MB "
          f"at {large:,}")


if __name__ == "__main__":
    main()
