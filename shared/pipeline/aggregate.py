"""Aggregator: record shard completions; when every shard is in, assemble the dataset and start one fine-tune.

Completions are recorded in the job record by ETag compare-and-swap, so concurrent and repeated completion
messages are counted once. The move to `assembling` and then to `fine-tuning` are compare-and-swap transitions:
whichever handler wins a transition does the next step, and a handler that finds a step half done (a crash
between "all shards in" and "fine-tune started") redoes it — assembly is a pure rewrite and the fine-tuner's
`start` is idempotent by run name, so at most one fine-tune ever runs for a job.
"""

from __future__ import annotations

import json
import logging
import tempfile
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

from shared.assembly import training_record
from shared.consensus import agrees
from shared.joblog import fields
from shared.jobs.blobs import read_json
from shared.jobs.paths import OUTPUTS, JobPaths
from shared.jobs.record import Assembled, JobRecord, JobState, update_record
from shared.jobs.shards import RowResult, labelled_shards
from shared.manifest.load import stored_manifest
from shared.manifest.model import Manifest
from shared.pipeline import budget, events
from shared.pipeline.telemetry import job_metrics, log_job_metrics
from shared.ports import FineTuneRefused, FineTuneRequest
from shared.reasons import Reason
from shared.rows import Row
from shared.services import Services

log = logging.getLogger(__name__)


def on_completion(services: Services, body: dict[str, Any]) -> None:
    """Handle one completion message `{"job": ..., "shard": n}`, then publish what it changed."""
    complete_shard(services, str(body["job"]), int(body["shard"]), int(body.get("round") or 0))
    events.flush(services, str(body["job"]))


def complete_shard(services: Services, job: str, shard: int, round_: int) -> None:
    """Note the shard done; the last one assembles the dataset, gates it and starts the fine-tune."""
    store, settings = services.store, services.settings
    paths = JobPaths(settings.jobs_container, job)
    claim = uuid.uuid4().hex
    record = update_record(store, paths, lambda r: r.in_round(round_) and r.shard_done(shard))
    if record.state is JobState.ASSEMBLING:
        record = assemble_and_gate(services, paths, claim)
    if record.state is not JobState.FINE_TUNING or record.finetune is None or record.finetune.started:
        return
    if record.finetune.claim != claim:  # another handler moved the job on: take over only a stale claim
        stale_after = settings.finetune_claim_seconds
        record = update_record(store, paths, lambda r: r.reclaim(claim, stale_after))
    if record.finetune is not None and record.finetune.claim == claim:
        start_finetune(services, paths, record)


def assemble_and_gate(services: Services, paths: JobPaths, claim: str) -> JobRecord:
    """Write the three outputs in input order, then apply the gates and move the job on."""
    store = services.store
    manifest = stored_manifest(store, paths)
    plan = read_json(store, paths.plan)
    with tempfile.TemporaryDirectory(prefix="distill-assemble-") as tmp:
        counts, reasons = assemble(services, paths, manifest, plan["shards"], Path(tmp))
    metrics = job_metrics(counts, services.settings)
    log_job_metrics(paths.job, metrics)
    summary = Assembled(counts, reasons, metrics, budget.spent(store, paths))
    return update_record(store, paths, lambda r: r.assembled(summary, manifest, claim))


def assemble(services: Services, paths: JobPaths, manifest: Manifest, shards: int, tmp: Path
             ) -> tuple[Counter[str], Counter[str]]:
    """Stream shard inputs and results into train/validation/rejected files and upload them; returns the counts
    (rows per output, tokens, the teacher's 429s, cache hits) and the rejected rows by reason."""
    store = services.store
    counts: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    files = {name: (tmp / name).open("w", encoding="utf-8") for name in OUTPUTS}
    try:
        for shard in labelled_shards(store, paths, shards):
            header = shard.header
            counts.update(prompt_tokens=header.prompt_tokens, completion_tokens=header.completion_tokens,
                          throttled=header.throttled, cache_hits=header.cache_hits, tokens_saved=header.tokens_saved)
            for row, result in shard.rows:
                counts.update(checked(manifest, row, result))
                if result.answers is not None:
                    record = training_record(manifest.task, row, result.answers, prompt=manifest.prompt,
                                             student=manifest.student)
                    files[f"{result.split}.jsonl"].write(json.dumps(record, ensure_ascii=False) + "\n")
                    counts[result.split] += 1
                else:
                    files["rejected.jsonl"].write(json.dumps(result.rejection_record(), ensure_ascii=False) + "\n")
                    counts["rejected"] += 1
                    reasons[result.rejection.reason.value] += 1
    finally:
        for f in files.values():
            f.close()
    for name in OUTPUTS:
        store.upload_from(paths.file(name), tmp / name)
    return counts, reasons


def checked(manifest: Manifest, row: Row, result: RowResult) -> dict[str, int]:
    """How the teacher's kept answer to a row with a reference answer compares with it, for a task scored by exact
    match: `reference_checked` (a row dropped for disagreeing counts), `reference_agreed`."""
    if row.reference is None or manifest.task.rules.metric != "accuracy":
        return {}
    if result.answers is not None:
        return {"reference_checked": 1,
                "reference_agreed": int(agrees(manifest, result.answers[-1], row.reference, row.user))}
    dropped = result.rejection is not None and result.rejection.reason is Reason.DISAGREES
    return {"reference_checked": 1} if dropped else {}


def finetune_dataset_ready(services: Services, paths: JobPaths) -> JobRecord:
    """Go on to the fine-tune from `dataset ready` (a job first run with --no-finetune, run again without it) or from
    an export-only fine-tune (run again without --export-only)."""
    claim = uuid.uuid4().hex
    record = update_record(services.store, paths, lambda r: r.finetune_again(claim))
    if record.finetune is not None and record.finetune.claim == claim:
        start_finetune(services, paths, record)
    events.flush(services, paths.job)
    return record


def start_finetune(services: Services, paths: JobPaths, record: JobRecord) -> None:
    """Start the fine-tune (idempotent by run name) and note when it started."""
    manifest = stored_manifest(services.store, paths)
    assert record.finetune is not None
    name = record.finetune.name
    request = FineTuneRequest(
        name=name, job_id=paths.job, student_model=manifest.student.model,
        train_path=paths.file("train.jsonl"), validation_path=paths.file("validation.jsonl"),
        experiment_name=manifest.experiment_name, hyperparameters=dict(manifest.student.hyperparameters),
        method=manifest.student.method.value, output_model_name=manifest.output_model_name,
        tags={**manifest.tags, "distill_job": paths.job}, display_name=manifest.display_name,
        description=manifest.description, instance_type=manifest.student.instance_type,
    )
    try:
        services.finetuner.start(request)
    except FineTuneRefused as refused:  # trying again would not help: the job fails with the reason
        reason = str(refused)
        update_record(services.store, paths, lambda r: r.fail(f"fine-tune {name} not started: {reason}"))
        return
    update_record(services.store, paths, lambda r: r.finetune_started(name))
    log.info("job %s: fine-tune %s started", paths.job, name, extra=fields(paths.job, finetune=name))
