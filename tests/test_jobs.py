"""A job in storage: the typed record and its changes of state, and the shard and result codec."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shared.jobs import blobs
from shared.jobs.blobs import read_json
from shared.jobs.paths import JobPaths
from shared.jobs.record import JobRecord, JobState, create_record, new_record, read_record, update_record
from shared.jobs.shards import (
    ResultHeader,
    RowResult,
    decode_result,
    decode_shard,
    encode_result,
    labelled_shards,
    merge_result,
    shard_line,
    stopped_rows,
)
from shared.ports import Conflict, RunState
from shared.reasons import Reason
from shared.rows import Row
from shared.storage.local import LocalBlobStore
from shared.tasks.base import Accepted, Rejected

PATHS = JobPaths("jobs", "job1")


def labelling(shards: int = 2) -> JobRecord:
    record = new_record("job1", trace_id="t" * 32)
    assert record.plan("NLI", shards, {"total": 4, "train": 3, "validation": 1}, "other")
    return record


def test_the_record_keeps_the_layout_of_status_json(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    assert create_record(store, PATHS, labelling()) and not create_record(store, PATHS, new_record("job1"))
    doc = read_json(store, PATHS.status)
    assert doc["state"] == "labeling" and doc["shards_done"] == [] and doc["errors"] == []
    assert doc["trace_id"] == "t" * 32  # the first trace stays
    assert "finetune" not in doc and "cancel" not in doc and "round" not in doc  # what does not apply is left out
    assert JobRecord.from_json(doc).to_json() == doc


def test_the_last_shard_moves_the_job_to_assembling_once(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    create_record(store, PATHS, labelling())
    update_record(store, PATHS, lambda r: r.shard_done(1))
    record = update_record(store, PATHS, lambda r: r.shard_done(1))  # a repeat changes nothing
    assert record.state is JobState.LABELING and record.shards_done == [1]
    record = update_record(store, PATHS, lambda r: r.shard_done(0))
    assert record.state is JobState.ASSEMBLING and "labeling_finished" in record.timings
    assert not record.shard_done(0)


def test_a_fine_tune_is_claimed_started_and_ended_by_its_own_run() -> None:
    record = labelling(1)
    record.shard_done(0)
    record.state = JobState.DATASET_READY
    assert record.finetune_again("claim-a") and record.state is JobState.FINE_TUNING
    doc = record.to_json()["finetune"]
    assert doc == {"name": "job1-ft", "claim": "claim-a", "claimed": doc["claimed"], "started": None,
                   "status": None, "output_model": None, "finished": None}
    assert not record.reclaim("claim-b", stale_after=600)  # a fresh claim is not taken over
    assert record.finetune_started("job1-ft") and not record.finetune_started("job1-ft")
    assert not record.mark_cancel(1.0)  # too late: the fine-tune belongs to its service
    assert not record.run_ended(RunState("other-ft", "Completed"))
    assert not record.run_ended(RunState("job1-ft", "Running"))
    assert record.run_ended(RunState("job1-ft", "Failed", error="out of quota"))
    assert record.state is JobState.FAILED and record.errors == ["fine-tune run job1-ft ended Failed: out of quota"]
    assert not record.fail("again") and len(record.errors) == 1  # a final job stays as it is


def test_an_export_only_job_goes_on_to_training_under_a_new_run_name() -> None:
    record = labelling(1)
    record.shard_done(0)
    record.state = JobState.DATASET_READY
    assert record.finetune_again("claim-a") and record.finetune_started("job1-ft")
    assert record.run_ended(RunState("job1-ft", "Completed"))  # exported: no model
    assert record.state is JobState.SUCCEEDED and record.exported_only
    assert record.finetune_again("claim-b") and record.state is JobState.FINE_TUNING
    assert record.finetune is not None and record.finetune.name == "job1-ft-trained"
    assert record.finetune_started("job1-ft-trained")
    assert record.run_ended(RunState("job1-ft-trained", "Completed", output_model="models/job1"))
    assert record.state is JobState.SUCCEEDED and not record.exported_only
    assert not record.finetune_again("claim-c")  # a trained job stays trained


def test_a_budget_round_goes_back_to_labelling_the_shards_it_names() -> None:
    record = labelling(3)
    record.shards_done = [0, 1, 2]
    record.state, record.reason, record.budget = JobState.BUDGET_SPENT, "spent", {"tokens": 10}
    assert record.resume_round([1]) and record.round == 1
    assert (record.state, record.shards_done, record.reason, record.budget) == (JobState.LABELING, [0, 2], None, None)
    assert record.unfinished_shards() == [1]
    assert not record.in_round(0) and record.in_round(1)


def test_a_shard_batch_is_kept_in_the_record() -> None:
    record = labelling()
    assert record.set_batch(0, {"id": "b1", "round": 1}) and not record.set_batch(0, {"id": "b1", "round": 1})
    assert record.to_json()["batches"] == {"0": {"id": "b1", "round": 1}}


def test_a_record_made_by_an_early_cancel_is_planned_with_its_trace(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    create_record(store, PATHS, new_record("job1", cancel_requested=5.0))
    record = update_record(store, PATHS, lambda r: r.plan("NLI", 1, {"total": 1}, "trace"))
    assert record.cancel == {"requested": 5.0} and record.trace_id == "trace"
    assert read_record(store, PATHS) == record


# --- shards and results ----------------------------------------------------------------------------------------
ROWS = [("train", Row(f"{i:064x}-0", "train.jsonl", i + 1, ({"role": "user", "content": f"q{i}"},))) for i in range(3)]


def results(*reasons: Reason | None) -> list[RowResult]:
    return [RowResult(row.id, split, row.source, row.line, 7,
                      (Accepted("neutral", None),) if reason is None else None,
                      Rejected(reason, "why", "") if reason is not None else None)
            for (split, row), reason in zip(ROWS, reasons, strict=True)]


def test_shards_and_results_round_trip() -> None:
    data = "\n".join(shard_line(split, row) for split, row in ROWS).encode()
    assert decode_shard(data) == ROWS
    header = ResultHeader(0, accepted=2, rejected=1, prompt_tokens=10, completion_tokens=4)
    encoded = encode_result(header, results(None, Reason.BUDGET, None))
    assert decode_result(encoded) == (header, results(None, Reason.BUDGET, None))
    first = json.loads(encoded.splitlines()[0])
    assert list(first) == ["shard", "accepted", "rejected", "prompt_tokens", "completion_tokens", "throttled",
                           "cache_hits", "tokens_saved"]
    assert stopped_rows(encoded) == {ROWS[1][1].id}


def test_a_resumed_round_replaces_only_the_rows_the_budget_stopped() -> None:
    old = encode_result(ResultHeader(0, 1, 2, 10, 4), results(None, Reason.BUDGET, Reason.BUDGET))
    new = encode_result(ResultHeader(0, 1, 0, 5, 2, throttled=1), results(None, None, Reason.TIMEOUT)[1:2])
    header, merged = decode_result(merge_result(old, new))
    assert [r.answers is not None for r in merged] == [True, True, False]
    assert merged[2].rejection.reason is Reason.BUDGET
    assert (header.accepted, header.rejected, header.prompt_tokens, header.throttled) == (2, 1, 15, 1)


def test_a_result_that_does_not_match_its_shard_is_refused(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    store.write(PATHS.shard(0), "\n".join(shard_line(s, r) for s, r in ROWS).encode())
    with pytest.raises(LookupError, match="not finished labelling"):
        list(labelled_shards(store, PATHS, 1))
    store.write(PATHS.result(0), encode_result(ResultHeader(0), list(reversed(results(None, None, None)))))
    with pytest.raises(ValueError, match=r"where .* was expected"):
        list(labelled_shards(store, PATHS, 1))


class Contending(LocalBlobStore):
    """A store whose conditional writes lose to another writer the first `losses` times."""

    def __init__(self, root: Path, losses: int) -> None:
        super().__init__(root)
        self.losses = losses

    def write(self, path: str, data: bytes, *, if_match: str | None = None, if_absent: bool = False) -> str:
        if (if_match or if_absent) and self.losses > 0:
            self.losses -= 1
            raise Conflict(path)
        return super().write(path, data, if_match=if_match, if_absent=if_absent)


def test_a_contended_compare_and_swap_backs_off_and_then_gives_up(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    pauses: list[float] = []
    monkeypatch.setattr(blobs, "pause", pauses.append)
    store = Contending(tmp_path, losses=5)
    store.write("jobs/j/x.json", b"{}")
    assert blobs.update_json(store, "jobs/j/x.json", lambda doc: {**doc, "n": 1}) == {"n": 1}
    bases = [min(blobs.MAX_BACKOFF, blobs.FIRST_BACKOFF * 2**k) for k in range(5)]  # doubling, with jitter
    assert len(pauses) == 5 and all(0.5 * base <= took <= 1.5 * base for base, took in zip(bases, pauses, strict=True))
    pauses.clear()
    store.losses = 10**6
    with pytest.raises(blobs.Contended):
        blobs.update_json(store, "jobs/j/x.json", lambda doc: {**doc, "n": 2})
    assert len(pauses) == blobs.CAS_TRIES - 1 and max(pauses) <= blobs.MAX_BACKOFF * 1.5


class CountingReads(LocalBlobStore):
    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.reads: list[str] = []

    def read(self, path: str):
        self.reads.append(path)
        return super().read(path)


def test_teacher_workers_notice_a_cancel_without_reading_the_job_record(tmp_path: Path) -> None:
    from shared.pipeline.cancel import CancelWatch, request_cancel

    store = CountingReads(tmp_path)
    paths = JobPaths("jobs", "j")
    create_record(store, paths, new_record("j"))
    watch = CancelWatch(store, paths, every=0.0)
    assert not watch()
    assert request_cancel(store, paths).marked and read_record(store, paths).cancel
    store.reads.clear()
    assert watch() and store.reads == [paths.cancel_flag]
