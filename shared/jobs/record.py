"""The job record (`jobs/<job>/status.json`): a job's state, counts and timings, and every change of state.

Each change is a method of `JobRecord` that returns whether it changed anything; `update_record` applies it by ETag
compare-and-swap, so concurrent and repeated handlers change a record once. States:

    ingesting → labeling → assembling → fine-tuning → evaluating → succeeded
                                      ↘ dataset ready (no fine-tune asked), budget spent (a higher budget goes on),
                                        cancelled, failed (with a readable error), from any state not final

A fine-tune that trained a model goes on to `evaluating` when the manifest's evaluation reaches the student; a failed
evaluation still ends `succeeded` (the model is kept), with the reason in `evaluation.error`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from shared.jobs import events
from shared.jobs.blobs import dumps, now, read_json, update_json
from shared.jobs.paths import JobPaths, fitted
from shared.ports import TERMINAL_STATUSES, BlobStore, Conflict, RunState
from shared.reasons import Reason

if TYPE_CHECKING:
    from shared.manifest.model import Manifest


RUN_NAME_CHARS = 255  # AzureML's limit on a job name, which a fine-tune run's name is


class JobState(StrEnum):
    INGESTING = "ingesting"
    LABELING = "labeling"
    ASSEMBLING = "assembling"
    FINE_TUNING = "fine-tuning"
    EVALUATING = "evaluating"  # the students are asked the validation rows (shared.pipeline.evaluate)
    DATASET_READY = "dataset ready"  # goal state of --no-finetune
    BUDGET_SPENT = "budget spent"  # stopped by the token budget; a run with a higher budget goes on
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"  # `distill cancel`: generation stopped, the rows labelled so far assembled, no fine-tune

    @property
    def final(self) -> bool:
        return self in (JobState.DATASET_READY, JobState.BUDGET_SPENT, JobState.SUCCEEDED, JobState.FAILED,
                        JobState.CANCELLED)


@dataclass
class FineTune:
    """The job's fine-tune run: claimed by one aggregator, started once, finished by a run event or the poller."""

    name: str
    claim: str | None = None  # the handler that may start it
    claimed: float | None = None
    started: float | None = None
    status: str | None = None  # the run's final status (AzureML casing)
    output_model: str | None = None
    finished: float | None = None


@dataclass
class Assembled:
    """What assembly counted (shared.pipeline.aggregate)."""

    counts: Mapping[str, int]  # train, validation, rejected, prompt_tokens, completion_tokens, cache_hits, ...
    reasons: Mapping[str, int]  # rejected rows by reason code
    metrics: dict[str, Any]
    spent: int  # tokens spent, as the budget ledger counts them


@dataclass
class JobRecord:
    """Everything `status.json` holds; fields that do not apply yet are None and left out of the file."""

    job: str
    state: JobState
    created: float
    timings: dict[str, float] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    trace_id: str | None = None
    updated: float | None = None
    cancel: dict[str, float] | None = None  # {"requested": time}, once `distill cancel` asked
    # planned (labeling)
    task: str | None = None
    shards: int | None = None
    rows: dict[str, int] | None = None  # total, train, validation
    shards_done: list[int] | None = None
    round: int | None = None  # a round resumed with a higher budget (1, 2, ...)
    batches: dict[str, dict[str, Any]] | None = None  # shard → its provider batch (shared.teacher.batch)
    waiting: dict[str, Any] | None = None  # {"until": time, "why": ...}: the latest long wait for the teacher
    pace: dict[str, Any] | None = None  # {"per_minute", "source"}: the teacher's calls a minute, as a shard last saw
    # assembled
    accepted: dict[str, int] | None = None
    rejected: int | None = None
    rejected_by_reason: dict[str, int] | None = None
    filtered: dict[str, int] | None = None  # rejected rows a quality gate kept out (no_majority, ...), by reason
    references: dict[str, int] | None = None  # the teacher's answers against the rows' references: checked, agreed
    success_ratio: float | None = None
    tokens: dict[str, int] | None = None
    metrics: dict[str, Any] | None = None
    cache: dict[str, int] | None = None
    # stopped by the budget
    budget: dict[str, int] | None = None
    reason: str | None = None
    finetune: FineTune | None = None
    # the evaluation: while it runs {"started", "claim", "claimed", "deployments"}; once over {"scores", "rows", ...} or
    # {"error", ...} (shared.pipeline.evaluate)
    evaluation: dict[str, Any] | None = None
    # Distill's own events (shared.jobs.events): not yet published, and those a subscriber could not be sent
    outbox: list[dict[str, Any]] | None = None
    progress_reported: int | None = None  # percent of the rows labelled at the last Progress event (this round)
    events_missed: list[dict[str, str]] | None = None

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> JobRecord:
        known = {f.name for f in fields(cls)}
        values = {key: value for key, value in doc.items() if key in known}
        values["state"] = JobState(doc["state"])
        if doc.get("finetune"):
            values["finetune"] = FineTune(**doc["finetune"])
        return cls(**values)

    def to_json(self) -> dict[str, Any]:
        doc = {f.name: getattr(self, f.name) for f in fields(self)}
        doc["finetune"] = asdict(self.finetune) if self.finetune else None
        return {key: value for key, value in doc.items() if value is not None}

    @property
    def final(self) -> bool:
        return self.state.final

    # --- changes of state ---------------------------------------------------------------------------------------
    def fail(self, error: str) -> bool:
        """Fail the job with a readable error (a final job stays as it is)."""
        if self.final:
            return False
        self.state = JobState.FAILED
        self.errors.append(error)
        self.timings["finished"] = now()
        return True

    def plan(self, task: str, shards: int, rows: dict[str, int], trace_id: str) -> bool:
        """Ingested: the shards are written and about to be sent."""
        if self.state is not JobState.INGESTING:
            return False
        self.trace_id = self.trace_id or trace_id  # a record made by an early `distill cancel` has none yet
        self.state, self.task, self.shards, self.rows = JobState.LABELING, task, shards, rows
        self.shards_done = self.shards_done or []
        self.timings["labeling_started"] = now()
        return True

    def shard_done(self, shard: int) -> bool:
        """Add a shard to the done set; the last one moves the job to assembling."""
        if self.state not in (JobState.INGESTING, JobState.LABELING):
            return False
        done = set(self.shards_done or [])
        if shard in done:
            return False
        done.add(shard)
        self.shards_done = sorted(done)
        if self.state is JobState.LABELING and len(done) == self.shards:
            self.state, self.waiting = JobState.ASSEMBLING, None
            self.timings["labeling_finished"] = now()
        return True

    def wait(self, until: float, why: str) -> bool:
        """A teacher call waits until `until` (a rate limit, a retry's backoff); kept when it ends later than the
        wait already shown (by a second or more), so concurrent calls write the record rarely."""
        if self.state is not JobState.LABELING or (self.waiting and self.waiting["until"] >= until - 1):
            return False
        self.waiting = {"until": round(until, 1), "why": why}
        return True

    def paced(self, per_minute: float, source: str) -> bool:
        """The teacher's pace a shard ended at ("configured", "headers" or "learned"); kept while labelling, and
        written only when its source changes or it moved by a tenth, so shards rarely write the record for it."""
        shown = self.pace or {}
        if self.state is not JobState.LABELING or (shown.get("source") == source and
                                                   abs(per_minute - shown.get("per_minute", 0)) < per_minute / 10):
            return False
        self.pace = {"per_minute": round(per_minute, 1), "source": source}
        return True

    def in_round(self, round_: int) -> bool:
        """Whether a completion of this round belongs to the job's current round (a late one is ignored)."""
        return round_ >= (self.round or 0)

    def assembled(self, summary: Assembled, manifest: Manifest, claim: str) -> bool:
        """Record the counts, apply the gates and pick the next state (only from assembling)."""
        if self.state is not JobState.ASSEMBLING:
            return False
        counts = summary.counts
        accepted = counts.get("train", 0) + counts.get("validation", 0)
        filtered = {reason: n for reason, n in summary.reasons.items() if Reason(reason).quality_gate}
        total = accepted + counts.get("rejected", 0) - sum(filtered.values())  # the teacher answered usably
        ratio = accepted / total if total else 0.0
        self.accepted = {"train": counts.get("train", 0), "validation": counts.get("validation", 0)}
        self.rejected, self.rejected_by_reason = counts.get("rejected", 0), dict(summary.reasons)
        self.filtered = filtered or None
        if checked := counts.get("reference_checked", 0):
            self.references = {"checked": checked, "agreed": counts.get("reference_agreed", 0)}
        self.success_ratio = round(ratio, 4)
        self.tokens = {"prompt": counts.get("prompt_tokens", 0), "completion": counts.get("completion_tokens", 0)}
        self.metrics = summary.metrics
        self.cache = {"hits": counts.get("cache_hits", 0), "tokens_saved": counts.get("tokens_saved", 0)}
        self.timings["assembled"] = now()
        if self.cancel:
            return self._end(JobState.CANCELLED)
        if stopped := summary.reasons.get(Reason.BUDGET):
            return self._budget_spent(manifest.limits.budget_tokens or 0, stopped, summary.spent)
        if ratio < manifest.min_success_ratio:
            return self.fail(f"only {ratio:.1%} of rows were labelled; the job needs {manifest.min_success_ratio:.0%} "
                             "(min_success_ratio); see rejected.jsonl")
        if counts.get("train", 0) < manifest.effective_min_rows:
            return self.fail(f"{counts.get('train', 0)} training rows were labelled; the job needs "
                             f"{manifest.effective_min_rows} (min_rows)")
        if counts.get("validation", 0) == 0:
            return self.fail("no validation row was labelled; the fine-tune needs validation data")
        if not manifest.finetune:
            return self._end(JobState.DATASET_READY)
        return self._claim_finetune(claim)

    def finetune_again(self, claim: str) -> bool:
        """From `dataset ready` on to the fine-tune (a job first run with --no-finetune, run again without it), or
        from an export-only fine-tune on to training (run again without --export-only), under a new run name."""
        if self.state is not JobState.DATASET_READY and not self.exported_only:
            return False
        name = fitted(self.job, "-ft-trained", RUN_NAME_CHARS) if self.exported_only else None
        self.timings.pop("finished", None)
        return self._claim_finetune(claim, name)

    @property
    def attempt(self) -> str:
        """Which run of the job this is: its record's creation time (new after `--restart`), in hex milliseconds."""
        return f"{int(self.created * 1000):x}"

    @property
    def exported_only(self) -> bool:
        """The job succeeded with a fine-tune that only exported the dataset: no model was trained."""
        ft = self.finetune
        return self.state is JobState.SUCCEEDED and ft is not None and ft.status == "Completed" and not ft.output_model

    def reclaim(self, claim: str, stale_after: float) -> bool:
        """Take over the fine-tune start from a handler that claimed it and has not started it for too long."""
        ft = self.finetune
        if self.state is not JobState.FINE_TUNING or ft is None or ft.started:
            return False
        if now() - (ft.claimed or 0) < stale_after:
            return False
        ft.claim, ft.claimed = claim, now()
        return True

    def finetune_started(self, name: str) -> bool:
        ft = self.finetune
        if ft is None or ft.name != name or ft.started:
            return False
        ft.started = self.timings["finetune_started"] = now()
        return True

    def run_ended(self, run: RunState, *, evaluate: bool = False) -> bool:
        """The run's final status, when it is this job's run and the job still waits for it; a run that trained a
        model goes on to `evaluating` when `evaluate`."""
        ft = self.finetune
        if self.state is not JobState.FINE_TUNING or ft is None or ft.name != run.name:
            return False
        if run.status not in TERMINAL_STATUSES:
            return False
        ft.status, ft.output_model, ft.finished = run.status, run.output_model, now()
        if run.status != "Completed":
            return self.fail(f"fine-tune run {run.name} ended {run.status}" + (f": {run.error}" if run.error else ""))
        if evaluate and run.output_model:
            self.state, self.evaluation = JobState.EVALUATING, {"started": now()}
            self.timings["evaluation_started"] = self.evaluation["started"]
            return True
        return self._end(JobState.SUCCEEDED)

    def deployments_seen(self, deployments: dict[str, str]) -> bool:
        """The names of the deployments the evaluation made (role → name), kept so the job can say where they are."""
        if self.state is not JobState.EVALUATING or not deployments or \
                (self.evaluation or {}).get("deployments") == deployments:
            return False
        self.evaluation = {**(self.evaluation or {}), "deployments": deployments}
        return True

    def claim_evaluation(self, claim: str, stale_after: float) -> bool:
        """Take the scoring for `claim` (a message id): when nobody holds it, it is this claim's own again (a
        redelivery), or its holder has not finished for `stale_after` seconds."""
        current = self.evaluation or {}
        if self.state is not JobState.EVALUATING:
            return False
        held = current.get("claim")
        if held and held != claim and now() - current.get("claimed", 0) < stale_after:
            return False
        self.evaluation = {**current, "claim": claim, "claimed": now()}
        return True

    def evaluated(self, outcome: dict[str, Any], claim: str | None = None) -> bool:
        """The evaluation is over (scores, or an `error`): the job succeeds with it. With `claim`, only the holder of
        the scoring claim may end it."""
        current = self.evaluation or {}
        if self.state is not JobState.EVALUATING or (claim is not None and current.get("claim") != claim):
            return False
        kept = {key: current[key] for key in ("started", "deployments") if key in current}
        self.evaluation = {**kept, **outcome, "finished": now()}
        self.timings["evaluated"] = self.evaluation["finished"]
        return self._end(JobState.SUCCEEDED)

    def mark_cancel(self, requested: float) -> bool:
        """Note that `distill cancel` asked: workers stop sending rows (not once the job is final or fine-tuning)."""
        if self.cancel or self.final or self.state in (JobState.FINE_TUNING, JobState.EVALUATING):
            return False
        self.cancel = {"requested": requested}
        return True

    def resume_round(self, shards_again: list[int]) -> bool:
        """A `budget spent` job back to labelling, as a new round of the shards holding rows the budget stopped."""
        if self.state is not JobState.BUDGET_SPENT:
            return False
        self.state = JobState.LABELING
        self.round = (self.round or 0) + 1
        self.shards_done = sorted(set(self.shards_done or []) - set(shards_again))
        self.reason = self.budget = self.progress_reported = None
        self.timings.pop("finished", None)
        return True

    def set_batch(self, shard: int, batch: dict[str, Any]) -> bool:
        """Where a shard's provider batch stands (shared.teacher.batch)."""
        batches = self.batches or {}
        if batches.get(str(shard)) == batch:
            return False
        self.batches = {**batches, str(shard): batch}
        return True

    def queue_events(self, before: JobRecord, container: str) -> None:
        """Add the events of the change from `before` to this record to the outbox."""
        found = events.transitions(before, self)
        if any(transition.startswith("Progress") for transition in found):
            self.progress_reported = events.percent_done(self)
        if new := [events.outbox_entry(self, transition, container) for transition in found]:
            self.outbox = [*(self.outbox or []), *new]

    def published(self, ids: set[str], missed: list[dict[str, str]]) -> bool:
        """Events sent (`ids`, out of the outbox), with what some subscriber could not be sent (`missed`)."""
        if not ids and not missed:
            return False
        self.outbox = [e for e in self.outbox or [] if e["id"] not in ids] or None
        self.events_missed = [*(self.events_missed or []), *missed] or None
        return True

    def publish_failed(self, ids: set[str], error: str, max_tries: int) -> bool:
        """A send of these outbox events failed: they stay for the next try, until `max_tries`, then count as
        missed with the error."""
        kept, missed = [], []
        for entry in self.outbox or []:
            tries = entry.get("tries", 0) + (entry["id"] in ids)
            if tries >= max_tries:
                missed.append({"id": entry["id"], "to": "the event topic", "error": error})
            else:
                kept.append({**entry, "tries": tries} if tries else entry)
        self.outbox = kept or None
        self.events_missed = [*(self.events_missed or []), *missed] or None
        return bool(ids)

    # --- queries ----------------------------------------------------------------------------------------------
    def unfinished_shards(self) -> list[int]:
        """The shards not done yet (to send again when a resumed round was cut short)."""
        done = set(self.shards_done or [])
        return [i for i in range(self.shards or 0) if i not in done]

    def _end(self, state: JobState) -> bool:
        self.state = state
        self.timings["finished"] = now()
        return True

    def _claim_finetune(self, claim: str, name: str | None = None) -> bool:
        self.state = JobState.FINE_TUNING
        self.finetune = FineTune(name=name or fitted(self.job, "-ft", RUN_NAME_CHARS), claim=claim, claimed=now())
        return True

    def _budget_spent(self, budget: int, stopped: int, spent: int) -> bool:
        self.budget = {"tokens": budget, "spent": spent, "rows_not_sent": stopped}
        self.reason = (f"token budget of {budget:,} spent ({spent:,} tokens used); {stopped:,} rows were not "
                       "sent to the teacher. Run again with a higher --budget-tokens (or limits.budget_tokens) to "
                       "label them; finished rows are kept")
        return self._end(JobState.BUDGET_SPENT)


def new_record(job: str, *, trace_id: str | None = None, cancel_requested: float | None = None) -> JobRecord:
    """A job's first record: ingesting (made by ingest, or by `distill cancel` for a job not ingested yet)."""
    timings = {} if cancel_requested is not None else {"ingest_started": now()}
    cancel = {"requested": cancel_requested} if cancel_requested is not None else None
    return JobRecord(job=job, state=JobState.INGESTING, created=now(), timings=timings, trace_id=trace_id,
                     cancel=cancel)


def read_record(store: BlobStore, paths: JobPaths) -> JobRecord | None:
    doc = read_json(store, paths.status)
    return None if doc is None else JobRecord.from_json(doc)


def create_record(store: BlobStore, paths: JobPaths, record: JobRecord) -> bool:
    """Write the job record if there is none yet; False when one exists (a repeated event).

    The job's active marker is written first, so the poll timer, which reads only marked jobs, never misses one; it
    removes the marker once the job is over (shared.pipeline.run_events)."""
    store.write(paths.active_marker, dumps({"created": record.created}))
    try:
        store.write(paths.status, dumps(record.to_json()), if_absent=True)
    except Conflict:
        return False
    return True


def unmark_if_over(store: BlobStore, paths: JobPaths, record: JobRecord | None) -> None:
    """Remove the job's active marker once the job is over: final, with every event published."""
    if record is not None and record.final and not record.outbox:
        store.delete(paths.active_marker)


def update_record(store: BlobStore, paths: JobPaths, change: Callable[[JobRecord], bool]) -> JobRecord:
    """Apply a change to the job record atomically (ETag compare-and-swap, retried on conflict).

    `change` gets a copy and returns whether it changed it; the events of the change go into the outbox in the same
    write (shared.jobs.events). Returns the record as stored.
    """
    def apply(doc: dict[str, Any]) -> dict[str, Any] | None:
        record = JobRecord.from_json(doc)
        if not change(record):
            return None
        record.queue_events(JobRecord.from_json(doc), paths.container)
        return record.to_json()

    return JobRecord.from_json(update_json(store, paths.status, apply, stamp=True))
