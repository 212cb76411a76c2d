"""Better labels: the majority of several teacher samples (self-consistency) and the check against the reference
answers, judged alone and through the pipeline against a test teacher that answers wrongly at a set rate."""

import json
from pathlib import Path

import pytest
from test_evaluation import answers_of, nli_sample, write_rows

from shared.consensus import disagreement, majority
from shared.jobs.blobs import dumps, read_json
from shared.jobs.paths import JobPaths
from shared.jobs.shards import decode_result
from shared.local.runtime import LocalRuntime
from shared.manifest.model import ManifestError, validate_manifest
from shared.reasons import Reason
from shared.storage.local import LocalBlobStore
from shared.tasks import Task
from shared.tasks.base import Accepted, Rejected
from shared.testkit.teacher import FakeTeacher

QUESTION = "Premise: a dog runs. Hypothesis: an animal moves."


def nli(**changes: object):
    return validate_manifest({"task": "nli", "training_file": "t.jsonl", **changes})


def stop(*contents: str | None) -> list[tuple[str | None, str]]:
    return [(content, "stop") for content in contents]


def test_the_majority_answer_is_kept_with_the_share_that_gave_it() -> None:
    verdict = majority(nli(prompt={"samples": 3}), stop("neutral", "entailment", "entailment"), QUESTION)
    assert verdict.outcome == Accepted("entailment", None) and verdict.agreement == pytest.approx(0.6667)


def test_the_longest_reasoning_that_reaches_the_majority_answer_is_kept() -> None:
    def reply(reasoning: str, answer: str) -> str:
        return json.dumps({"reasoning": reasoning, "answer": answer})

    shown = "A dog is an animal, and running is moving, so the premise says an animal moves."
    replies = stop(reply("Dogs are animals.", "entailment"), reply(shown + " It could be neutral.", "neutral"),
                   reply(shown, "entailment"), reply("Running is moving.", "entailment"))
    verdict = majority(nli(prompt={"samples": 4, "chain_of_thought": True}), replies, QUESTION)
    assert verdict.outcome == Accepted("entailment", shown) and verdict.agreement == 0.75


def test_no_majority_is_rejected_with_the_tally() -> None:
    verdict = majority(nli(prompt={"samples": 4}), stop("neutral", "entailment", "entailment", "contradiction"),
                       QUESTION)  # 2 of 4 is not more than half
    assert isinstance(verdict.outcome, Rejected) and verdict.outcome.reason is Reason.NO_MAJORITY
    assert verdict.outcome.detail.startswith("2 of 4 samples agree (entailment 2, neutral 1, contradiction 1")
    assert verdict.agreement == 0.5


def test_min_agreement_sets_the_share_needed_and_unusable_samples_count_as_votes_lost() -> None:
    manifest = nli(prompt={"samples": 3}, min_agreement=1.0)
    assert majority(manifest, stop("entailment", "entailment", "entailment"), QUESTION).agreement == 1.0
    lost = majority(manifest, stop("entailment", "entailment", None), QUESTION)
    assert lost.outcome.reason is Reason.NO_MAJORITY and lost.agreement == pytest.approx(0.6667)
    assert majority(nli(prompt={"samples": 3}), stop("entailment", "entailment", None), QUESTION).outcome == \
        Accepted("entailment", None)


def test_when_no_sample_is_usable_the_first_rejection_stands() -> None:
    verdict = majority(nli(prompt={"samples": 2}), [(None, "stop"), ("neutral", "length")], QUESTION)
    assert verdict.outcome.reason is Reason.EMPTY and verdict.agreement == 0.0


def test_one_sample_is_judged_as_it_is() -> None:
    assert majority(nli(), stop("Entailment."), QUESTION).outcome == Accepted("entailment", None)
    assert majority(nli(), stop("Entailment."), QUESTION).agreement is None


def test_the_reference_check_drops_only_a_disagreeing_answer_when_asked() -> None:
    wrong = Accepted("neutral", "It may or may not.")
    drop = nli(drop_disagreeing=True)
    rejected = disagreement(drop, wrong, "entailment", QUESTION)
    assert rejected.reason is Reason.DISAGREES and "'neutral'" in rejected.detail and "'entailment'" in rejected.detail
    assert disagreement(drop, Accepted("entailment", None), "Entailment", QUESTION) is None
    assert disagreement(drop, wrong, None, QUESTION) is None  # no reference: nothing to check
    assert disagreement(nli(), wrong, "entailment", QUESTION) is None  # the check is off


def test_the_manifest_rules_for_sampling() -> None:
    assert nli(prompt={"samples": 3}).inference.temperature == 0.7  # sampling needs a temperature above 0
    assert nli(prompt={"samples": 3}, inference={"temperature": 0.2}).inference.temperature == 0.2
    with pytest.raises(ManifestError, match=r"inference\.temperature: 0 gives the same answer every time"):
        nli(prompt={"samples": 3}, inference={"temperature": 0})
    with pytest.raises(ManifestError, match=r"prompt\.samples: a majority needs answers that can be compared"):
        validate_manifest({"task": "summarization", "training_file": "t.jsonl", "prompt": {"samples": 3}})
    with pytest.raises(ManifestError, match=r"min_agreement: needs prompt\.samples above 1"):
        nli(min_agreement=0.6)
    with pytest.raises(ManifestError, match="drop_disagreeing: only for answers that can be compared"):
        validate_manifest({"task": "conversation", "training_file": "t.jsonl", "drop_disagreeing": True})


# --- through the pipeline ---------------------------------------------------------------------------------------
def label(tmp_path: Path, teacher: FakeTeacher, files: dict, job: str = "job1", **changes: object) -> dict:
    """Label the files with `teacher` through the local runtime (`finetune: false`); the job record."""
    store = LocalBlobStore(tmp_path / "storage")
    for name, rows in files.items():
        write_rows(tmp_path / name, rows)
        store.upload_from(f"input/{job}/{name}", tmp_path / name)
    manifest = {"task": "nli", "training_file": "train.jsonl", "validation_file": "validation.jsonl",
                "min_rows": 1, "teacher": {"kind": "openai_compatible", "url": teacher.base_url, "model": "t"},
                "finetune": False, "min_success_ratio": 0.9, **changes}
    store.write(f"input/{job}/manifest.json", dumps(manifest))
    paths = JobPaths("jobs", job)
    runtime = LocalRuntime(store, tmp_path / f"{job}.db", environ={})
    try:
        runtime.blob_created(f"input/{job}/manifest.json")
        runtime.drain(lambda: read_json(store, paths.status)["state"] in ("failed", "dataset ready"))
    finally:
        runtime.close()
    return read_json(store, paths.status)


def agreements(tmp_path: Path, job: str = "job1") -> list[float]:
    store, paths = LocalBlobStore(tmp_path / "storage"), JobPaths("jobs", job)
    found = []
    for shard in range(read_json(store, paths.plan)["shards"]):
        found += [r.agreement for r in decode_result(store.read(paths.result(shard)).data)[1]]
    return found


def test_majority_labels_beat_single_answers_and_each_sample_is_paid_once(tmp_path: Path) -> None:
    files = nli_sample(tmp_path / "sample", validation_rows=40)  # 70 training rows, 40 validation rows
    rows = sum(len(r) for r in files.values())
    with FakeTeacher(answers_of(files), task=Task.NLI, wrong_rate=0.3, seed=7) as teacher:
        single = label(tmp_path / "one", teacher, files)
        asked = teacher.requests_total
        five = label(tmp_path / "five", teacher, files, job="job5", prompt={"samples": 5})
    assert asked == rows and teacher.requests_total - asked == 5 * rows  # the server answers one choice a call
    accuracy = {name: record["references"]["agreed"] / record["references"]["checked"]
                for name, record in (("single", single), ("five", five))}
    assert accuracy["single"] < 0.75 and accuracy["five"] > 0.8  # 0.691 and 0.818: the answers drawn are fixed
    assert five["references"]["checked"] == rows and "filtered" not in five  # two answers: 5 samples always agree
    recorded = agreements(tmp_path / "five", "job5")
    assert set(recorded) <= {0.6, 0.8, 1.0} and len(recorded) == rows
    assert five["tokens"]["prompt"] > 4.5 * single["tokens"]["prompt"]  # every sample is counted


def test_rows_without_a_majority_are_kept_out_and_not_counted_against_the_teacher(tmp_path: Path) -> None:
    files = nli_sample(tmp_path / "sample", validation_rows=40)
    rows = sum(len(r) for r in files.values())
    with FakeTeacher(answers_of(files), task=Task.NLI, wrong_rate=0.4, seed=1) as teacher:
        record = label(tmp_path, teacher, files, prompt={"samples": 2}, min_success_ratio=1.0)
    ties = record["filtered"]["no_majority"]  # one right and one wrong answer: no majority of two
    assert ties > 20 and record["rejected"] == ties and record["success_ratio"] == 1.0
    assert record["state"] == "dataset ready" and record["references"]["checked"] == rows - ties


def test_more_samples_later_pay_only_for_the_new_ones(tmp_path: Path) -> None:
    files = nli_sample(tmp_path / "sample", validation_rows=20)
    rows = sum(len(r) for r in files.values())
    storage = tmp_path / "shared"
    with FakeTeacher(answers_of(files), honours_n=True) as teacher:
        label(storage, teacher, files, job="three", prompt={"samples": 3})
        assert teacher.requests_total == rows  # one call of n=3 a row
        first = teacher.requests_total
        label(storage, teacher, files, job="five", prompt={"samples": 5})
    assert teacher.requests_total - first == rows  # one call of n=2 a row: three samples came from the cache
    assert teacher.last_body["n"] == 2


def test_the_reference_check_keeps_teacher_mistakes_out_and_counts_them_apart(tmp_path: Path) -> None:
    files = nli_sample(tmp_path / "sample", validation_rows=40)
    rows = sum(len(r) for r in files.values())
    with FakeTeacher(answers_of(files), task=Task.NLI, wrong_rate=0.25, seed=3) as teacher:
        record = label(tmp_path, teacher, files, drop_disagreeing=True)
    dropped = record["filtered"]["disagrees_with_reference"]
    assert 10 < dropped < 45 and record["rejected"] == dropped and record["success_ratio"] == 1.0
    assert record["references"] == {"checked": rows, "agreed": rows - dropped}
    rejected = [json.loads(line) for line in (tmp_path / "storage" / "jobs" / "job1" / "rejected.jsonl")
                .read_text().splitlines()]
    assert {r["reason"] for r in rejected} == {"disagrees_with_reference"} and len(rejected) == dropped
    train = (tmp_path / "storage" / "jobs" / "job1" / "train.jsonl").read_text().splitlines()
    references = {m[1]["content"]: m[2]["content"] for m in files["train.jsonl"]}
    for line in train:  # every label kept is the reference's
        messages = json.loads(line)["messages"]
        assert messages[-1]["content"] == references[messages[1]["content"]]
