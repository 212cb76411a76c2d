"""One job-id rule everywhere (AzureML's rule for job names), and names that derive from a job id (message ids, run
names) that stay within their services' limits for every valid id."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shared.cli import main
from shared.jobs.paths import is_job_id
from shared.jobs.record import RUN_NAME_CHARS, JobRecord, JobState
from shared.local.samples import nli_pairs, nli_row
from shared.manifest.model import ManifestError, validate_manifest
from shared.pipeline.messages import deferred_shard, evaluation_message, shard_message
from shared.ports import MESSAGE_ID_CHARS

LONGEST = "J" + "x_-9" * 63 + "ab"  # 255 characters


@pytest.mark.parametrize("name", ["Distillation-nli-llama", "Distillation-nlu-qa-llama", "my_job_2", "7", LONGEST])
def test_azureml_job_names_are_job_ids(name: str) -> None:
    assert is_job_id(name)
    assert validate_manifest({"task": "nli", "training_file": "t.jsonl", "name": name}).name == name


@pytest.mark.parametrize("name", ["", "-lead", "_lead", "a.b", "..", "a/b", "a b", "é", LONGEST + "x"])
def test_other_names_are_refused_with_the_rule(name: str) -> None:
    assert not is_job_id(name)
    with pytest.raises(ManifestError, match="name: a job id is 1 to 255 letters, digits, '-' and '_'"):
        validate_manifest({"task": "nli", "training_file": "t.jsonl", "name": name})


def test_every_message_id_fits_service_bus_for_the_longest_job_id() -> None:
    other = LONGEST[:-1] + "d"  # the same long prefix
    for job in (LONGEST, other):
        ids = [shard_message(kind, job, 99_999, round_).message_id for kind in ("shard", "done") for round_ in (0, 999)]
        ids.append(deferred_shard({"job": job, "shard": 99_999, "deferrals": 998}, 2e9).message_id)
        record = JobRecord(job=job, state=JobState.EVALUATING, created=4e9)
        ids += [evaluation_message(record, polls).message_id for polls in (0, 99_999)]
        assert max(map(len, ids)) <= MESSAGE_ID_CHARS and len(set(ids)) == len(ids)
        assert ids == [shard_message(kind, job, 99_999, r).message_id for kind in ("shard", "done") for r in (0, 999)
                       ] + [deferred_shard({"job": job, "shard": 99_999, "deferrals": 998}, 2e9).message_id] + [
            evaluation_message(record, polls).message_id for polls in (0, 99_999)]
    assert shard_message("done", LONGEST, 1).message_id != shard_message("done", other, 1).message_id
    assert shard_message("done", "short-job", 3).message_id == "short-job/done/3"  # short ids stay readable


def test_fine_tune_run_names_fit_azureml_for_the_longest_job_id() -> None:
    record = JobRecord(job=LONGEST, state=JobState.DATASET_READY, created=0.0)
    assert record.finetune_again("claim") and record.finetune is not None
    first = record.finetune.name
    record.state, record.finetune.status = JobState.SUCCEEDED, "Completed"  # an export-only fine-tune, trained next
    assert record.finetune_again("claim")
    names = [first, record.finetune.name]
    assert all(len(n) <= RUN_NAME_CHARS and is_job_id(n) for n in names) and len(set(names)) == 2
    assert JobRecord(job="j", state=JobState.DATASET_READY, created=0.0).finetune_again("c")


def test_a_job_with_the_longest_name_runs_end_to_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """The local queue refuses what Service Bus would, so this run shows the mapping holds."""
    monkeypatch.setenv("DISTILL_HOME", str(tmp_path / "home"))
    pairs = nli_pairs(seed=9)
    train = tmp_path / "train.jsonl"
    train.write_text("".join(json.dumps(nli_row(*next(pairs))) + "\n" for _ in range(80)))
    assert main(["run", "--task", "nli", "--train", str(train), "--teacher", "test", "--no-finetune",
                 "--job", LONGEST]) == 0
    assert f"job {LONGEST}: dataset ready" in capsys.readouterr().out
