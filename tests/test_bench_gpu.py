"""bench.gpu: the packaged models' shapes without their weights, and a clear word where there is no GPU."""

import json
from pathlib import Path

import pytest

from bench import gpu
from shared.local.models import STUDENT, model_folder
from shared.tasks import Task
from shared.validation import validate_file


def test_without_a_gpu_the_benchmark_says_so_and_succeeds(monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    import torch

    monkeypatch.delenv("DISTILL_DEVICE", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr("sys.argv", ["bench.gpu"])
    assert gpu.main() == 0
    assert "no GPU here" in capsys.readouterr().out


@pytest.mark.parametrize("name,millions", [("Qwen2.5-Coder-1.5B-Instruct", 1544), ("Qwen2.5-Coder-0.5B-Instruct", 630),
                                           ("SmolLM2-135M-Instruct", 135)])
def test_each_shape_has_its_models_size(name: str, millions: int) -> None:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    shape = dict(gpu.SHAPES[name])
    with torch.device("meta"):  # no memory: only the parameters' shapes
        model = AutoModelForCausalLM.from_config(AutoConfig.for_model(shape.pop("model_type"), **shape))
    assert round(sum(p.numel() for p in model.parameters()) / 1e6) == millions


def test_the_students_shape_is_its_converted_configuration() -> None:
    config = json.loads((model_folder(STUDENT.name) / "config.json").read_text())
    assert {key: config[key] for key in gpu.SHAPES[STUDENT.name]} == gpu.SHAPES[STUDENT.name]


def test_the_jobs_rows_are_valid_distinct_conversations_apart_from_its_validation_rows(tmp_path: Path) -> None:
    train, validation = gpu.JOB_ROWS
    train_file = gpu.write_rows(tmp_path / "train.jsonl", gpu.conversation_rows(train))
    validation_file = gpu.write_rows(tmp_path / "validation.jsonl", gpu.conversation_rows(validation, train))
    reports = [validate_file(path, Task.CONVERSATION) for path in (train_file, validation_file)]
    assert [(r.ok, r.rows, r.problems) for r in reports] == [(True, train, []), (True, validation, [])]
    lines = train_file.read_text().splitlines() + validation_file.read_text().splitlines()
    assert len(set(lines)) == train + validation
