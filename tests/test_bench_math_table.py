"""bench.math_table: its manifests are valid jobs, what it reads from a labelling job, and which labels it trains on."""

import json
from pathlib import Path

import pytest

from bench import math_table
from shared.manifest.load import load_manifest
from shared.manifest.model import SAMPLING_TEMPERATURE


@pytest.mark.parametrize("name", sorted(math_table.VARIANTS))
def test_each_variant_is_a_valid_manifest_asking_what_it_says(tmp_path: Path, name: str) -> None:
    samples, drop = math_table.VARIANTS[name]
    path = tmp_path / "m.yaml"
    path.write_text(json.dumps(math_table.manifest(tmp_path, name, samples, drop, finetune=False)))
    manifest = load_manifest(path)
    assert (manifest.name, manifest.prompt.samples, manifest.drop_disagreeing) == (name, samples, drop)
    assert manifest.prompt.keep_reasoning and not manifest.finetune
    assert manifest.inference.temperature == SAMPLING_TEMPERATURE  # one sample is the first of three
    assert manifest.student.model == "qwen2.5-coder-0.5b-instruct"


def status(train: int, validation: int, checked: int, agreed: int) -> dict:
    return {"accepted": {"train": train, "validation": validation},
            "references": {"checked": checked, "agreed": agreed}}


def test_a_labelling_job_gives_the_teachers_accuracy_before_the_check_and_the_kept_labels_after() -> None:
    read = math_table.labels({**status(300, 30, 420, 330), "filtered": {"disagrees_with_reference": 90}})
    assert read == {"train_rows": 300, "kept": 330, "teacher_accuracy": 0.7857, "kept_right": 1.0,
                    "filtered": {"disagrees_with_reference": 90}}
    assert math_table.labels(status(378, 42, 420, 315))["kept_right"] == 0.75


def test_the_student_trains_on_the_most_accurate_labels_then_the_most_rows() -> None:
    found = {name: math_table.labels(s) for name, s in {
        "math-s1": status(378, 42, 420, 310), "math-s1-checked": status(280, 30, 420, 310),
        "math-s3": status(378, 42, 420, 330), "math-s3-checked": status(296, 34, 420, 330)}.items()}
    assert math_table.best(found) == "math-s3-checked"
    del found["math-s3-checked"], found["math-s1-checked"]
    assert math_table.best(found) == "math-s3"


def test_each_choice_of_labels_trains_its_own_student_job() -> None:
    jobs = {math_table.distilled_job(name) for name in math_table.VARIANTS}
    assert jobs == {"math-distilled-s1", "math-distilled-s1-checked", "math-distilled-s3", "math-distilled-s3-checked"}


def test_the_trained_job_takes_the_epochs_asked_and_otherwise_the_trainers_default(tmp_path: Path) -> None:
    path = tmp_path / "m.yaml"
    path.write_text(json.dumps(math_table.manifest(tmp_path, "math-distilled-s3", 3, False, True, epochs=1)))
    assert load_manifest(path).student.hyperparameters == {"n_epochs": 1}
    path.write_text(json.dumps(math_table.manifest(tmp_path, "math-distilled-s3", 3, False, True)))
    assert load_manifest(path).student.hyperparameters == {}
