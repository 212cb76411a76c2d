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
from shared.joblog import fields
from shared.jobs import JobPaths, JobState, Record, fail, now, read_json, update_record
from shared.manifest.model import Manifest
from shared.pipeline import budget
from shared.pipeline.cancel import cancelled
from shared.pipeline.label import read_shard
from shared.pipeline.telemetry import job_metrics, log_job_metrics
from shared.ports import FineTuneRequest
from shared.reasons import Reason
from shared.services import Services
from shared.tasks.base import Accepted

log = logging.getLogger(__name__)

OUTPUTS = ("train.jsonl", "validation.jsonl", "rejected.jsonl")


def on_completion(services: Services, body: dict[str, Any]) -> None:
    """Handle one completion message `{"job": ..., "shard": n}`."""
    job, shard = str(body["job"]), int(body["shard"])
    store, settings = services.store, services.settings
    paths = JobPaths(settings.jobs_container, job)
    claim = uuid.uuid4().hex
    record = update_record(store, paths, lambda r: record_done(r, shard) if budget.current_round(body, r) else None)
    if record["state"] == JobState.ASSEMBLING:
        record = assemble_and_gate(services, paths, claim)
    if record["state"] != JobState.FINE_TUNING or record["finetune"]["started"]:
        return
    if record["finetune"]["claim"] != claim:  # another handler moved the job on: take over only a stale claim
        stale_after = settings.finetune_claim_seconds
        record = update_record(store, paths, lambda r: reclaim(r, claim, stale_after))
    if record["finetune"]["claim"] == claim:
        start_finetune(services, paths, record)


def record_done(record: Record, shard: int) -> Record | None:
    """Add a shard to the done set; the last one moves the job to assembling."""
    if JobState(record["state"]) not in (JobState.INGESTING, JobState.LABELING):
        return None
    done = set(record.get("shards_done", []))
    if shard in done:
        return None
    done.add(shard)
    record["shards_done"] = sorted(done)
    if record["state"] == JobState.LABELING and len(done) == record["shards"]:
        record["state"] = JobState.ASSEMBLING
        record["timings"]["labeling_finished"] = now()
    return record


def assemble_and_gate(services: Services, paths: JobPaths, claim: str) -> Record:
    """Write the three outputs in input order, then apply the gates and move the job on."""
    store = services.store
    manifest = Manifest.model_validate(read_json(store, paths.manifest))
    plan = read_json(store, paths.plan)
    with tempfile.TemporaryDirectory(prefix="distill-assemble-") as tmp:
        summary = assemble(services, paths, manifest, plan["shards"], Path(tmp))
    summary["metrics"] = job_metrics(summary["counts"], services.settings)
    log_job_metrics(paths.job, summary["metrics"])
    summary["spent"] = budget.spent(store, paths)
    return update_record(store, paths, lambda r: gate(r, manifest, summary, claim))


def assemble(services: Services, paths: JobPaths, manifest: Manifest, shards: int, tmp: Path) -> dict[str, Any]:
    """Stream shard inputs and results into train/validation/rejected files and upload them."""
    store = services.store
    counts: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    files = {name: (tmp / name).open("w", encoding="utf-8") for name in OUTPUTS}
    try:
        for index in range(shards):
            rows = read_shard(store.read(paths.shard(index)).data)
            header, *results = [json.loads(line) for line in store.read(paths.result(index)).data.splitlines()]
            counts["prompt_tokens"] += header["prompt_tokens"]
            counts["completion_tokens"] += header["completion_tokens"]
            counts["throttled"] += header.get("throttled", 0)
            counts["cache_hits"] += header.get("cache_hits", 0)
            counts["tokens_saved"] += header.get("tokens_saved", 0)
            for (split, row), result in zip(rows, results, strict=True):
                if result["id"] != row.id:
                    raise ValueError(f"shard {index}: result for {result['id']} where {row.id} was expected")
                if "answers" in result:
                    answers = [Accepted(a["answer"], a["reasoning"]) for a in result["answers"]]
                    record = training_record(manifest.task, row, answers, prompt=manifest.prompt,
                                             student=manifest.student)
                    files[f"{split}.jsonl"].write(json.dumps(record, ensure_ascii=False) + "\n")
                    counts[split] += 1
                else:
                    rejected = {k: result[k] for k in ("id", "split", "source", "line", "reason", "detail", "excerpt")}
                    files["rejected.jsonl"].write(json.dumps(rejected, ensure_ascii=False) + "\n")
                    counts["rejected"] += 1
                    reasons[result["reason"]] += 1
    finally:
        for f in files.values():
            f.close()
    for name in OUTPUTS:
        store.upload_from(paths.file(name), tmp / name)
    return {"counts": dict(counts), "reasons": dict(reasons)}


def gate(record: Record, manifest: Manifest, summary: dict[str, Any], claim: str) -> Record | None:
    """Apply the success-ratio and minimum-row gates and pick the next state (only from assembling)."""
    if record["state"] != JobState.ASSEMBLING:
        return None
    counts = summary["counts"]
    accepted = counts.get("train", 0) + counts.get("validation", 0)
    total = accepted + counts.get("rejected", 0)
    ratio = accepted / total if total else 0.0
    record.update(accepted={"train": counts.get("train", 0), "validation": counts.get("validation", 0)},
                  rejected=counts.get("rejected", 0), rejected_by_reason=summary["reasons"],
                  success_ratio=round(ratio, 4),
                  tokens={"prompt": counts.get("prompt_tokens", 0), "completion": counts.get("completion_tokens", 0)},
                  metrics=summary["metrics"],
                  cache={"hits": counts.get("cache_hits", 0), "tokens_saved": counts.get("tokens_saved", 0)})
    record["timings"]["assembled"] = now()
    if record.get("cancel"):
        return cancelled(record)
    if stopped := summary["reasons"].get(Reason.BUDGET):
        return budget.stop(record, manifest, stopped, summary["spent"])
    if ratio < manifest.min_success_ratio:
        return fail(record, f"only {ratio:.1%} of rows were labelled; the job needs {manifest.min_success_ratio:.0%} "
                            "(min_success_ratio); see rejected.jsonl")
    if counts.get("train", 0) < manifest.effective_min_rows:
        return fail(record, f"{counts.get('train', 0)} training rows were labelled; the job needs "
                            f"{manifest.effective_min_rows} (min_rows)")
    if counts.get("validation", 0) == 0:
        return fail(record, "no validation row was labelled; the fine-tune needs validation data")
    if not manifest.finetune:
        record["state"] = JobState.DATASET_READY
        record["timings"]["finished"] = now()
        return record
    record["state"] = JobState.FINE_TUNING
    record["finetune"] = {"name": f"{record['job']}-ft", "claim": claim, "claimed": now(), "started": None,
                          "status": None, "output_model": None}
    return record


def finetune_dataset_ready(services: Services, paths: JobPaths) -> Record:
    """Go on from `dataset ready` to the fine-tune (a job first run with --no-finetune, run again without it)."""
    claim = uuid.uuid4().hex

    def claimed(record: Record) -> Record | None:
        if record["state"] != JobState.DATASET_READY:
            return None
        record["state"] = JobState.FINE_TUNING
        record["timings"].pop("finished", None)
        record["finetune"] = {"name": f"{record['job']}-ft", "claim": claim, "claimed": now(), "started": None,
                              "status": None, "output_model": None}
        return record

    record = update_record(services.store, paths, claimed)
    if record.get("finetune", {}).get("claim") == claim:
        start_finetune(services, paths, record)
    return record


def reclaim(record: Record, claim: str, stale_after: float) -> Record | None:
    """Take over the fine-tune start from a handler that claimed it and has not started it for too long."""
    finetune = record.get("finetune") or {}
    if record["state"] != JobState.FINE_TUNING or finetune.get("started"):
        return None
    if now() - finetune["claimed"] < stale_after:
        return None
    finetune.update(claim=claim, claimed=now())
    return record


def start_finetune(services: Services, paths: JobPaths, record: Record) -> None:
    """Start the fine-tune (idempotent by run name) and note when it started."""
    manifest = Manifest.model_validate(read_json(services.store, paths.manifest))
    name = record["finetune"]["name"]
    request = FineTuneRequest(
        name=name, job_id=paths.job, student_model=manifest.student.model,
        train_path=paths.file("train.jsonl"), validation_path=paths.file("validation.jsonl"),
        experiment_name=manifest.experiment_name, hyperparameters=dict(manifest.student.hyperparameters),
        method=manifest.student.method.value, output_model_name=manifest.output_model_name,
        tags={"distill_job": paths.job},
    )
    services.finetuner.start(request)

    def started(r: Record) -> Record | None:
        if r.get("finetune", {}).get("name") != name or r["finetune"].get("started"):
            return None
        r["finetune"]["started"] = now()
        r["timings"]["finetune_started"] = r["finetune"]["started"]
        return r

    update_record(services.store, paths, started)
    log.info("job %s: fine-tune %s started", paths.job, name, extra=fields(paths.job, finetune=name))
