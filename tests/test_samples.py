"""The project's own generated sample data."""

import json
from collections import Counter
from pathlib import Path

from shared.local.samples import write_nli_sample
from shared.tasks import Task
from shared.validation import validate_file


def test_generated_nli_sample_is_valid_balanced_and_deterministic(tmp_path: Path) -> None:
    write_nli_sample(tmp_path / "a", rows=90, validation_rows=66)
    write_nli_sample(tmp_path / "b", rows=90, validation_rows=66)
    for name in ("train.jsonl", "validation.jsonl"):
        report = validate_file(tmp_path / "a" / name, Task.NLI)
        assert report.ok and report.warnings == 0, [str(p) for p in report.problems]
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    rows = [json.loads(line) for line in (tmp_path / "a" / "train.jsonl").read_text().splitlines()]
    labels = Counter(r["messages"][-1]["content"] for r in rows)
    assert labels == {"entailment": 30, "contradiction": 30, "neutral": 30}


def test_train_and_validation_pairs_do_not_overlap(tmp_path: Path) -> None:
    write_nli_sample(tmp_path, rows=120, validation_rows=80)
    users = [{json.loads(line)["messages"][1]["content"] for line in (tmp_path / name).read_text().splitlines()}
             for name in ("train.jsonl", "validation.jsonl")]
    assert len(users[0]) == 120 and len(users[1]) == 80
    assert not users[0] & users[1]
