"""Where a job's files are: `jobs/<job>/...` in the jobs container, and the rule a job id follows.

Layout of `jobs/<job>/`:

    manifest.json            the manifest as ingested (native form, data paths as blob paths)
    validation-report.json   what validation found, per file
    plan.json                shard count and row counts, written once before any shard is sent
    shards/NNNNN.jsonl       shard inputs: one row per line (shared.jobs.shards)
    results/NNNNN.jsonl      shard results: a header line, then one line per row, accepted or rejected
    budget.json, budget/NNNNN.json   tokens spent per shard and per row (shared.pipeline.budget)
    batches/NNNNN-errors.json        what a shard's last provider batch failed (shared.teacher.batch)
    train.jsonl, validation.jsonl, rejected.jsonl   the assembled outputs, in input order
    status.json              the job record (shared.jobs.record)
    cancel.json              there once the job is cancelled or failed: what teacher workers poll (pipeline.cancel)
    events.jsonl             every event the job published, one CloudEvent per line (shared.jobs.events)
    report.json, report.md, report.png, finetune/metrics.json   the evaluation report and the fine-tune's losses
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

JOB_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,254}$"  # AzureML's rule for a job name
JOB_ID = re.compile(JOB_ID_PATTERN)
FILE_NAME_CHARS = 255  # the longest file name most file systems take
ACTIVE = "_active"  # beside the job folders (no job id starts with "_"): the jobs not yet known to be over
JOB_ID_RULE = ("a job id is 1 to 255 letters, digits, '-' and '_', starting with a letter or digit "
               "(AzureML's rule for job names)")
SPLITS = ("train", "validation")
OUTPUTS = ("train.jsonl", "validation.jsonl", "rejected.jsonl")  # the assembled dataset and its rejections
# what a user copies out of a finished job (with the evaluation's report.* and evaluation.jsonl once written)
FINAL_FILES = (*OUTPUTS, "status.json")
METRICS = "finetune/metrics.json"


def is_job_id(job: str) -> bool:
    """Whether `job` is a job id, which is also safe as one folder name in storage and on disk (no dots, so no
    traversal; no encoding tricks; at most 255 characters, a file name's limit)."""
    return JOB_ID.fullmatch(job) is not None


def fitted(job: str, suffix: str, limit: int) -> str:
    """`job + suffix` in at most `limit` characters (a message id, a run name): a job id too long for that is cut,
    and 16 hex digits of its hash keep the result unique."""
    if len(job) + len(suffix) <= limit:
        return job + suffix
    digest = hashlib.sha256(job.encode()).hexdigest()[:16]
    return f"{job[:limit - len(suffix) - len(digest) - 1]}-{digest}{suffix}"


@dataclass(frozen=True, slots=True)
class JobPaths:
    container: str
    job: str

    @property
    def root(self) -> str:
        return f"{self.container}/{self.job}"

    def file(self, name: str) -> str:
        return f"{self.root}/{name}"

    @property
    def active_marker(self) -> str:
        """In `<container>/_active/`: one small blob per job that may still need the poll timer (shared.jobs.record)."""
        return f"{self.container}/{ACTIVE}/{self.job}"

    @property
    def cancel_flag(self) -> str:
        return self.file("cancel.json")

    @property
    def pace(self) -> str:
        """The teacher's pace each instance labelling the job has learned (shared.pipeline.pace)."""
        return self.file("pace.json")

    @property
    def events(self) -> str:
        return self.file("events.jsonl")

    @property
    def status(self) -> str:
        return self.file("status.json")

    @property
    def manifest(self) -> str:
        return self.file("manifest.json")

    @property
    def plan(self) -> str:
        return self.file("plan.json")

    @property
    def validation_report(self) -> str:
        return self.file("validation-report.json")

    def shard(self, index: int) -> str:
        return self.file(f"shards/{index:05d}.jsonl")

    def result(self, index: int) -> str:
        return self.file(f"results/{index:05d}.jsonl")

    @property
    def budget_ledger(self) -> str:
        return self.file("budget.json")

    def budget_rows(self, shard: int) -> str:
        return self.file(f"budget/{shard:05d}.json")

    def batch_errors(self, shard: int) -> str:
        return self.file(f"batches/{shard:05d}-errors.json")
