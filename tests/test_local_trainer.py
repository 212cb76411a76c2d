"""LocalTrainer: trains SmolLM2-135M on CPU with TRL, saves a standard HF folder and sends AzureML's run event.

The training tests share one short full fine-tune (1 epoch of 4 steps) and run one 1-step LoRA fine-tune; they
skip when torch/TRL or the student's weights are not installed (`make install-local`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from shared.finetune.run_events import RUN_STATUS_CHANGED, RunUpdate, interpret
from shared.local import trainer as local_trainer
from shared.local.models import ModelUnavailable, model_folder
from shared.local.trainer import (
    Hyperparameters,
    LocalTrainer,
    TrainingDataError,
    read_examples,
    resolve_hyperparameters,
    to_prompt_completion,
)
from shared.ports import FineTuneRequest, RunState
from shared.storage.local import LocalBlobStore

TOPIC = "local://distill/workspace"
JOB = "math-1a2b3c4d5e6f"
RUN = "distill-math-1a2b3c4d5e6f-ft"
STUDENT = "SmolLM2-135M-Instruct"
SYSTEM = {"role": "system", "content": "Answer with the number only."}


def sum_row(a: int, b: int) -> dict[str, Any]:
    return {"messages": [SYSTEM, {"role": "user", "content": f"What is {a} plus {b}?"},
                         {"role": "assistant", "content": str(a + b)}]}


def conversation_row(a: int) -> dict[str, Any]:
    return {"messages": [SYSTEM, {"role": "user", "content": f"Double {a}."},
                         {"role": "assistant", "content": str(2 * a)},
                         {"role": "user", "content": "And plus one?"},
                         {"role": "assistant", "content": str(2 * a + 1)}]}


TRAIN = [sum_row(a, a + 3) for a in range(14)] + [conversation_row(5), conversation_row(8)]
VALIDATION = [sum_row(a, 2 * a) for a in range(20, 26)]


def jsonl(rows: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(row) + "\n" for row in rows).encode()


def request(**changes: Any) -> FineTuneRequest:
    values: dict[str, Any] = {
        "name": RUN,
        "job_id": JOB,
        "student_model": STUDENT,
        "train_path": f"jobs/{JOB}/train.jsonl",
        "validation_path": f"jobs/{JOB}/validation.jsonl",
        "experiment_name": "distill",
        "hyperparameters": {"n_epochs": 1},
        "tags": {"distill_task": "MATH"},
    }
    return FineTuneRequest(**{**values, **changes})


@dataclass
class Run:
    store: LocalBlobStore
    published: list[dict[str, Any]]
    trainer: LocalTrainer
    output_root: Path


def new_run(root: Path, train: bytes = jsonl(TRAIN)) -> Run:
    store = LocalBlobStore(root / "store")
    store.write(f"jobs/{JOB}/train.jsonl", train)
    store.write(f"jobs/{JOB}/validation.jsonl", jsonl(VALIDATION))
    published: list[dict[str, Any]] = []
    return Run(store, published, LocalTrainer(store, published.append, TOPIC, root / "models"), root / "models")


def differing(first: Path, second: Path) -> set[str]:
    """The names of the weights that differ between two model folders."""
    import torch
    from transformers import AutoModelForCausalLM

    a, b = (AutoModelForCausalLM.from_pretrained(f, dtype=torch.float32).state_dict() for f in (first, second))
    assert a.keys() == b.keys()
    return {name for name in a if not torch.equal(a[name], b[name])}


@pytest.fixture(scope="module")
def student() -> Path:
    """The student's HF folder; skips when the training stack or the weights are not installed."""
    for module in ("torch", "transformers", "trl", "peft", "datasets"):
        pytest.importorskip(module)
    try:
        return model_folder(STUDENT)
    except ModelUnavailable as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def full_run(student: Path, tmp_path_factory: pytest.TempPathFactory) -> Run:
    """One full fine-tune: 16 rows, batch 4, 1 epoch = 4 steps."""
    run = new_run(tmp_path_factory.mktemp("full"))
    assert run.trainer.start(request()) == RUN
    return run


# The record -> prompt/completion conversion


def test_a_single_turn_record_splits_before_the_answer() -> None:
    row = sum_row(2, 3)

    assert to_prompt_completion(row) == {"prompt": row["messages"][:2], "completion": [row["messages"][2]]}


def test_a_conversation_trains_on_the_last_assistant_message_only() -> None:
    row = conversation_row(4)

    pair = to_prompt_completion(row)

    assert pair["prompt"] == row["messages"][:4]
    assert pair["completion"] == [{"role": "assistant", "content": "9"}]


def test_message_fields_other_than_role_and_content_are_dropped() -> None:
    row = {"messages": [{"role": "user", "content": "hi", "name": "ann"}, {"role": "assistant", "content": "hello"}]}

    assert to_prompt_completion(row) == {"prompt": [{"role": "user", "content": "hi"}],
                                         "completion": [{"role": "assistant", "content": "hello"}]}


@pytest.mark.parametrize(("record", "reason"), [
    ({}, "no messages"),
    ({"messages": []}, "no messages"),
    ({"messages": [SYSTEM, {"role": "user", "content": "2+2?"}]}, "the last message is not the assistant's"),
    ({"messages": [{"role": "assistant", "content": "4"}]}, "no prompt before the assistant message"),
    ({"messages": [SYSTEM, {"role": "user", "content": 4}]}, "string role and content"),
])
def test_a_record_without_a_trainable_answer_is_refused(record: dict[str, Any], reason: str) -> None:
    with pytest.raises(TrainingDataError, match=reason):
        to_prompt_completion(record)


def test_read_examples_names_the_bad_line(tmp_path: Path) -> None:
    path = tmp_path / "train.jsonl"
    path.write_bytes(jsonl([sum_row(1, 2)]) + b"\n" + b'{"messages": [\n')

    with pytest.raises(TrainingDataError, match=r"^train.jsonl line 3: not UTF-8 JSON$"):
        read_examples(path)


# Hyperparameters


def test_hyperparameter_defaults_depend_on_the_method() -> None:
    assert resolve_hyperparameters({}, "full") == Hyperparameters(epochs=3, batch_size=4, learning_rate=5e-5)
    assert resolve_hyperparameters({}, "lora") == Hyperparameters(epochs=3, batch_size=4, learning_rate=2e-4)


def test_azureml_names_are_accepted_and_hf_names_win() -> None:
    azure = {"n_epochs": "2", "batch_size": 8, "learning_rate_multiplier": "0.5"}

    assert resolve_hyperparameters(azure, "full") == Hyperparameters(epochs=2, batch_size=8, learning_rate=2.5e-5)
    assert resolve_hyperparameters({**azure, "num_train_epochs": 1, "per_device_train_batch_size": 2,
                                    "learning_rate": "1e-4", "max_steps": 6}, "full") == Hyperparameters(
        epochs=1, batch_size=2, learning_rate=1e-4, max_steps=6)


@pytest.mark.parametrize(("raw", "method", "reason"), [
    ({"warmup": 3}, "full", "unknown hyperparameters warmup"),
    ({"n_epochs": "three"}, "full", "n_epochs is not a number"),
    ({"batch_size": 2.5}, "full", "batch_size must be a whole number"),
    ({"learning_rate": 0}, "full", "learning_rate must be a positive number"),
    ({}, "qlora", "unknown fine-tune method"),
])
def test_unusable_hyperparameters_are_refused(raw: dict[str, Any], method: str, reason: str) -> None:
    with pytest.raises(TrainingDataError, match=reason):
        resolve_hyperparameters(raw, method)


def test_steps_count_partial_batches() -> None:
    assert Hyperparameters(epochs=3, batch_size=4, learning_rate=1e-5).steps(17) == 15
    assert Hyperparameters(epochs=3, batch_size=4, learning_rate=1e-5, max_steps=2).steps(17) == 2


# A full fine-tune


def test_the_saved_folder_is_a_trained_standard_model(full_run: Run, student: Path) -> None:
    output = full_run.output_root / RUN

    assert list(full_run.output_root.iterdir()) == [output]  # no partial folder left behind
    assert (output / "model.safetensors").is_file() and (output / "tokenizer.json").is_file()
    changed = differing(student, output)
    assert "model.layers.0.self_attn.q_proj.weight" in changed and "model.embed_tokens.weight" in changed


def test_the_metrics_hold_train_and_eval_losses(full_run: Run) -> None:
    metrics = json.loads(full_run.store.read(f"jobs/{JOB}/finetune/metrics.json").data)

    assert [e["step"] for e in metrics["train"]] == [1]  # the first step, then every 5th
    assert [e["step"] for e in metrics["eval"]] == [0, 4]  # before training, then after the epoch
    assert metrics["eval"][-1]["loss"] < metrics["eval"][0]["loss"]
    assert (metrics["steps"], metrics["method"], metrics["hyperparameters"]["learning_rate"]) == (4, "full", 5e-5)


def test_one_completed_event_finishes_the_job(full_run: Run) -> None:
    [sent] = full_run.published

    assert sent["eventType"] == RUN_STATUS_CHANGED
    assert sent["data"]["runTags"] == {"distill_job": JOB, "distill_task": "MATH"}
    assert sent["data"]["runType"] == "distill.local_trainer"
    assert interpret(sent, workspace_topic=TOPIC) == RunUpdate(
        job_id=JOB, run_id=RUN, status="Completed", terminal=True, output_model=None, experiment="distill")


def test_state_names_the_saved_folder(full_run: Run) -> None:
    assert full_run.trainer.state(RUN) == RunState(
        name=RUN, status="Completed", output_model=str(full_run.output_root / RUN), error=None)


def test_a_second_start_trains_and_publishes_nothing(full_run: Run, monkeypatch: pytest.MonkeyPatch) -> None:
    def must_not_train(*args: Any) -> None:
        raise AssertionError("trained again")

    monkeypatch.setattr(local_trainer, "fine_tune", must_not_train)

    assert full_run.trainer.start(request()) == RUN
    assert len(full_run.published) == 1


# LoRA and failures


def test_lora_saves_a_merged_standard_model(student: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = new_run(tmp_path)

    run.trainer.start(request(method="lora", hyperparameters={"max_steps": 1}))

    assert "Fine-tuning SmolLM2-135M-Instruct (lora, batch 4, lr 0.0002) on 16 rows, validating on 6: 1 step\n" \
        in capsys.readouterr().err
    output = run.output_root / RUN
    assert run.published[0]["data"]["runStatus"] == "Completed"
    assert not (output / "adapter_config.json").exists()
    changed = differing(student, output)
    assert "model.layers.0.mlp.down_proj.weight" in changed
    assert "model.embed_tokens.weight" not in changed  # only the linear layers had adapters
    metrics = json.loads(run.store.read(f"jobs/{JOB}/finetune/metrics.json").data)
    assert metrics["eval"][-1]["step"] == 1  # evaluated at the end although the epoch was cut short


def test_a_broken_train_file_fails_the_run(tmp_path: Path) -> None:
    run = new_run(tmp_path, train=jsonl(TRAIN[:2]) + b"not json\n")

    assert run.trainer.start(request()) == RUN

    [sent] = run.published
    assert (sent["data"]["runStatus"], sent["data"]["runError"]) == ("Failed", "train.jsonl line 3: not UTF-8 JSON")
    assert sent["data"]["runProperties"] == {}
    assert run.trainer.state(RUN) == RunState(name=RUN, status="Failed", output_model=None,
                                              error="train.jsonl line 3: not UTF-8 JSON")
    assert not run.output_root.exists()


def test_a_missing_blob_fails_the_run(tmp_path: Path) -> None:
    run = new_run(tmp_path)

    run.trainer.start(request(validation_path=f"jobs/{JOB}/nope.jsonl"))

    assert run.published[0]["data"]["runError"] == f"missing blob: jobs/{JOB}/nope.jsonl"


def test_an_error_while_training_fails_the_run_with_a_short_reason(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    def crash(*args: Any) -> None:
        raise RuntimeError("out of memory\nTraceback (most recent call last): secret=hunter2")

    monkeypatch.setattr(local_trainer, "fine_tune", crash)
    run = new_run(tmp_path)

    run.trainer.start(request())

    assert run.published[0]["data"]["runError"] == "training failed: RuntimeError: out of memory"
    assert run.trainer.state(RUN).status == "Failed"


def test_a_run_left_running_trains_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []

    def killed(*args: Any) -> None:
        raise KeyboardInterrupt  # the process stops mid-training

    def fake_fine_tune(request: FineTuneRequest, *args: Any) -> dict[str, Any]:
        calls.append(request.name)
        return {}

    run = new_run(tmp_path)
    monkeypatch.setattr(local_trainer, "fine_tune", killed)
    with pytest.raises(KeyboardInterrupt):
        run.trainer.start(request())
    assert run.trainer.state(RUN).status == "Running"
    monkeypatch.setattr(local_trainer, "fine_tune", fake_fine_tune)

    run.trainer.start(request())
    run.trainer.start(request())

    assert calls == [RUN]
    assert [e["data"]["runStatus"] for e in run.published] == ["Completed"]


def test_state_of_an_unknown_run_raises_lookup_error(tmp_path: Path) -> None:
    with pytest.raises(LookupError, match="no local training run named nope"):
        new_run(tmp_path).trainer.state("nope")


@pytest.mark.parametrize("name", ["../escape", "a/b", ""])
def test_a_name_that_is_not_a_path_segment_is_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(ValueError, match="run name"):
        new_run(tmp_path).trainer.start(request(name=name))


def test_before_training_runs_first_and_only_when_training(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    monkeypatch.setattr(local_trainer, "fine_tune", lambda *args: calls.append("trained") or {"train": []})
    store = LocalBlobStore(tmp_path / "store")
    store.write(f"jobs/{JOB}/train.jsonl", jsonl(TRAIN))
    store.write(f"jobs/{JOB}/validation.jsonl", jsonl(VALIDATION))
    trainer = LocalTrainer(store, lambda event: None, TOPIC, tmp_path / "models",
                           before_training=lambda: calls.append("teacher stopped"))

    trainer.start(request())
    trainer.start(request())  # finished: not trained again

    assert calls == ["teacher stopped", "trained"]
