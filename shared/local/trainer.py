"""LocalTrainer: fine-tunes the student on this machine with TRL, the local mode's FineTuner: on the local device
(shared.local.models.local_device), a GPU with bfloat16 mixed precision when there is one, else the CPU in float32.

Training runs synchronously inside `start`. Each chat record becomes a conversational prompt/completion pair
(prompt = every message before the last assistant message, completion = that message) and the loss covers the
completion only. `method` "full" trains every weight; "lora" trains a LoRA adapter (r=16, alpha=32, dropout 0.05,
every linear layer) and merges it, so either way the output is a standard HF folder (float32 safetensors + tokenizer,
~540 MB for SmolLM2) at `output_root/<run name>`. When the run ends, it publishes the Event Grid event an AzureML
workspace would send (`shared.finetune.run_events.run_event`), so the local pipeline finishes a job through the same
`run_events` step as Azure.

Hyperparameters (AzureML serverless name or Hugging Face name; the HF name wins when both are given):

    n_epochs / num_train_epochs               3     small distilled sets need a few passes (3 epochs moved SmolLM2
                                                    from 1/15 to 7/15 on held-out NLI pairs here)
    batch_size / per_device_train_batch_size  4     SmolLM2-135M, 2 idle CPU cores, ~200-token rows: ~6 s a step,
                                                    ~4 GB RSS (~8 GB for rows near MAX_LENGTH); 32 on a GPU, where a
                                                    SmolLM2 step costs the same 0.11 s at batch 4 and 32
    learning_rate_multiplier / learning_rate  5e-5 full (the usual full-SFT rate for a small model: it moves the
                                                    weights within an epoch without wrecking them), 2e-4 LoRA
                                                    (adapters start at zero and need a ~10x larger rate); the
                                                    multiplier scales the method's default
    max_steps                                 none  stop after this many steps (overrides the epochs)

Blobs written:

    jobs/<job>/finetune/run.json       the run record (status Running while training, then Completed or Failed)
    jobs/<job>/finetune/metrics.json   the loss history: train loss every 5 steps, eval loss before training and
                                       after each epoch (and at the end, when max_steps stops mid-epoch)
    jobs/_local_runs/<run name>.json   {"job_id": ...}: finds the record from a run name
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from shared.finetune.run_events import run_event
from shared.jobs.blobs import dumps
from shared.jobs.paths import METRICS, JobPaths
from shared.local.models import Device, local_device, model_folder
from shared.local.runs import RunBook, check_run_name
from shared.ports import TERMINAL_STATUSES, BlobStore, Conflict, FineTuneRequest, RunState
from shared.settings import Settings

logger = logging.getLogger(__name__)

RUN_TYPE = "distill.local_trainer"
SEED = 42
LOGGING_STEPS = 5
MAX_LENGTH = 1024  # tokens per training sequence (TRL's default); a longer row loses its end, answer included
MAX_REASON_CHARS = 300
DEFAULT_LEARNING_RATES = {"full": 5e-5, "lora": 2e-4}
LORA = {"r": 16, "lora_alpha": 32, "lora_dropout": 0.05, "target_modules": "all-linear"}

Publish = Callable[[dict[str, Any]], None]


class TrainingDataError(ValueError):
    """A training file or a hyperparameter the trainer cannot use; its message is a safe failure reason."""


@dataclass(frozen=True, slots=True)
class Hyperparameters:
    """The resolved training settings."""

    epochs: float
    batch_size: int
    learning_rate: float
    max_steps: int | None = None

    def steps(self, rows: int) -> int:
        """The optimizer steps a run over `rows` examples takes (no gradient accumulation)."""
        return self.max_steps or math.ceil(math.ceil(rows / self.batch_size) * self.epochs)


class LocalTrainer:
    """A FineTuner that trains the student on this machine and saves it as a standard HF folder."""

    def __init__(self, store: BlobStore, publish: Publish, workspace_topic: str, output_root: Path,
                 before_training: Callable[[], None] | None = None) -> None:
        self._store = store
        self._container = Settings().jobs_container  # as the local runtime has it
        self._runs = RunBook(store, self._container, "finetune", "_local_runs")
        self._publish = publish
        self._topic = workspace_topic
        self._output_root = Path(output_root)
        self._before_training = before_training  # e.g. stop a local teacher: its memory is free for training

    def start(self, request: FineTuneRequest) -> str:
        """Train once per run name and publish the run's final status; a finished run is not trained again.

        A run left Running (its process stopped) trains again. Missing blobs, bad rows, bad hyperparameters and
        any error while training end the run Failed (recorded and published); a store error raises.
        """
        check_run_name(request.name, "run name")
        check_run_name(request.job_id, "job id")
        previous = self._runs.load(request.name)
        if previous is not None and previous["status"] in TERMINAL_STATUSES:
            return request.name
        self._store.write(self._runs.index_path(request.name), dumps({"job_id": request.job_id}))
        running = self._store.write(self._runs.record_path(request.job_id), dumps(_record(request, "Running")))
        output, error = self._run(request)
        status = "Failed" if error else "Completed"
        try:
            self._store.write(self._runs.record_path(request.job_id), dumps(_record(request, status, output, error)),
                              if_match=running)
        except Conflict:
            return request.name  # another start of the same run recorded it and publishes
        self._publish(run_event(request, status=status, error=error, workspace_topic=self._topic,
                                run_type=RUN_TYPE))
        return request.name

    def state(self, name: str) -> RunState:
        """The recorded run; raises LookupError when no run of that name was started."""
        run = self._runs.load(name)
        if run is None:
            raise LookupError(f"no local training run named {name}")
        return RunState(name=name, status=run["status"], output_model=run["output_model"], error=run["error"])

    def _run(self, request: FineTuneRequest) -> tuple[str | None, str | None]:
        """Download, train, save and write the metrics: (output folder, None), or (None, the failure reason)."""
        output = self._output_root / request.name
        if self._before_training is not None:
            self._before_training()
        with tempfile.TemporaryDirectory(prefix="distill-train-") as tmp:
            files = {"train": Path(tmp) / "train.jsonl", "validation": Path(tmp) / "validation.jsonl"}
            for blob, local in zip((request.train_path, request.validation_path), files.values(), strict=True):
                if not self._store.download_to(blob, local):
                    return None, f"missing blob: {blob}"
            try:
                metrics = fine_tune(request, files["train"], files["validation"], output, Path(tmp))
            except Exception as exc:
                logger.exception("local training run %s failed", request.name)
                return None, failure_reason(exc)
        self._store.write(JobPaths(self._container, request.job_id).file(METRICS), dumps(metrics))
        return str(output), None


def fine_tune(request: FineTuneRequest, train_file: Path, validation_file: Path, output: Path,
              workdir: Path) -> dict[str, Any]:
    """Train the student on the two files, save it to `output` and return the metrics."""
    device = local_device()
    hyperparameters = resolve_hyperparameters(request.hyperparameters, request.method, gpu=device.gpu)
    train_rows, validation_rows = read_examples(train_file), read_examples(validation_file)
    trainer = _trainer(request, hyperparameters, train_rows, validation_rows, workdir, device)
    steps = hyperparameters.steps(len(train_rows))
    print(f"Fine-tuning {request.student_model} ({request.method}, batch {hyperparameters.batch_size}, "
          f"lr {hyperparameters.learning_rate:g}) on {len(train_rows)} rows, validating on {len(validation_rows)}: "
          f"{steps} step{'s' * (steps != 1)}", file=sys.stderr, flush=True)
    started = time.monotonic()
    trainer.train()
    if not any("eval_loss" in e and e["step"] == trainer.state.global_step for e in trainer.state.log_history):
        trainer.evaluate()  # max_steps ended mid-epoch: still report where the validation loss ended
    seconds = time.monotonic() - started
    model = trainer.model.merge_and_unload() if request.method == "lora" else trainer.model
    _save(model, trainer.processing_class, output)
    return _metrics(trainer.state.log_history, hyperparameters, request.method, seconds)


def _trainer(request: FineTuneRequest, hyperparameters: Hyperparameters, train_rows: list[dict[str, Any]],
             validation_rows: list[dict[str, Any]], workdir: Path, device: Device) -> Any:
    """An SFTTrainer for the student, loaded in float32, with a LoRA adapter for the "lora" method."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, set_seed
    from trl import SFTTrainer

    set_seed(SEED)
    folder = model_folder(request.student_model)
    return SFTTrainer(
        model=AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32),
        args=_sft_config(hyperparameters, workdir / "trainer", device),
        train_dataset=Dataset.from_list(train_rows),
        eval_dataset=Dataset.from_list(validation_rows),
        processing_class=AutoTokenizer.from_pretrained(folder),
        peft_config=_lora_config() if request.method == "lora" else None,
    )


def to_prompt_completion(record: Mapping[str, Any]) -> dict[str, list[dict[str, str]]]:
    """A chat record as TRL's conversational prompt/completion pair, split at the last assistant message.

    The record must end with that assistant message and have at least one message before it.
    """
    messages = record.get("messages") if isinstance(record, Mapping) else None
    if not isinstance(messages, list) or not messages:
        raise TrainingDataError("no messages")
    turns = [_message(m) for m in messages]
    if turns[-1]["role"] != "assistant":
        raise TrainingDataError("the last message is not the assistant's")
    if len(turns) < 2:
        raise TrainingDataError("no prompt before the assistant message")
    return {"prompt": turns[:-1], "completion": turns[-1:]}


def read_examples(path: Path) -> list[dict[str, list[dict[str, str]]]]:
    """Every non-blank line of a chat JSONL file as a prompt/completion pair; raises TrainingDataError."""
    examples = []
    with path.open("rb") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                examples.append(to_prompt_completion(json.loads(line.decode("utf-8-sig"))))
            except ValueError as exc:  # UnicodeDecodeError, JSONDecodeError and TrainingDataError are ValueErrors
                reason = str(exc) if isinstance(exc, TrainingDataError) else "not UTF-8 JSON"
                raise TrainingDataError(f"{path.name} line {number}: {reason}") from None
    if not examples:
        raise TrainingDataError(f"{path.name} has no rows")
    return examples


GPU_BATCH_SIZE = 32  # the default batch on a GPU (the CPU's is 4)


def resolve_hyperparameters(raw: Mapping[str, str | int | float], method: str, *, gpu: bool = False
                            ) -> Hyperparameters:
    """Settings from AzureML or HF names (the HF name wins), with defaults for a small model on CPU."""
    if method not in DEFAULT_LEARNING_RATES:
        raise TrainingDataError(f"unknown fine-tune method {method!r} (expected full or lora)")
    known = {"n_epochs", "num_train_epochs", "batch_size", "per_device_train_batch_size",
             "learning_rate_multiplier", "learning_rate", "max_steps"}
    if unknown := sorted(set(raw) - known):
        raise TrainingDataError(f"unknown hyperparameters {', '.join(unknown)} (known: {', '.join(sorted(known))})")
    multiplier = _number(raw, "learning_rate_multiplier", 1.0)
    return Hyperparameters(
        epochs=_number(raw, "num_train_epochs", _number(raw, "n_epochs", 3)),
        batch_size=_integer(raw, "per_device_train_batch_size",
                            _integer(raw, "batch_size", GPU_BATCH_SIZE if gpu else 4)),
        learning_rate=_number(raw, "learning_rate", DEFAULT_LEARNING_RATES[method] * multiplier),
        max_steps=_integer(raw, "max_steps", 1) if "max_steps" in raw else None,
    )


def failure_reason(exc: BaseException) -> str:
    """A short, safe reason: the message of our own errors, else the error's type and first line."""
    if isinstance(exc, TrainingDataError):
        return str(exc)[:MAX_REASON_CHARS]
    first_line = next(iter(str(exc).strip().splitlines()), "")
    return f"training failed: {type(exc).__name__}: {first_line}"[:MAX_REASON_CHARS]


def _message(message: Any) -> dict[str, str]:
    if not isinstance(message, Mapping) or not isinstance(message.get("role"), str) \
            or not isinstance(message.get("content"), str):
        raise TrainingDataError("a message is not an object with string role and content")
    return {"role": message["role"], "content": message["content"]}


def _number(raw: Mapping[str, str | int | float], name: str, default: float) -> float:
    value = raw.get(name, default)
    try:
        number = float(value)
    except ValueError:
        raise TrainingDataError(f"hyperparameter {name} is not a number: {value!r}") from None
    if not math.isfinite(number) or number <= 0:
        raise TrainingDataError(f"hyperparameter {name} must be a positive number, not {value!r}")
    return number


def _integer(raw: Mapping[str, str | int | float], name: str, default: int) -> int:
    number = _number(raw, name, default)
    if not number.is_integer():
        raise TrainingDataError(f"hyperparameter {name} must be a whole number, not {raw[name]!r}")
    return int(number)


def _sft_config(hyperparameters: Hyperparameters, output_dir: Path, device: Device) -> Any:
    from trl import SFTConfig

    return SFTConfig(
        output_dir=str(output_dir),
        num_train_epochs=hyperparameters.epochs,
        max_steps=hyperparameters.max_steps or -1,
        per_device_train_batch_size=hyperparameters.batch_size,
        per_device_eval_batch_size=hyperparameters.batch_size,
        learning_rate=hyperparameters.learning_rate,
        completion_only_loss=True,
        max_length=MAX_LENGTH,
        eval_strategy="epoch",
        eval_on_start=True,  # the student's validation loss before training, to compare with the end
        logging_steps=LOGGING_STEPS,
        logging_first_step=True,
        seed=SEED,
        data_seed=SEED,
        use_cpu=not device.gpu,
        bf16=device.gpu,  # bfloat16 mixed precision on a GPU; on the CPU train in float32 as loaded
        activation_checkpointing=True,  # ~25% slower a step, but rows near MAX_LENGTH peak at ~8 GB RSS, not 13
        report_to=[],
        save_strategy="no",
    )


def _lora_config() -> Any:
    from peft import LoraConfig

    return LoraConfig(task_type="CAUSAL_LM", **LORA)


def _save(model: Any, tokenizer: Any, output: Path) -> None:
    """Save model and tokenizer into a folder of this save's own, then swap it in for any earlier output."""
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f".{output.name}.", dir=output.parent))
    try:
        model.save_pretrained(partial)
        tokenizer.save_pretrained(partial)
        shutil.rmtree(output, ignore_errors=True)
        partial.replace(output)
    finally:
        shutil.rmtree(partial, ignore_errors=True)


def _metrics(log_history: list[dict[str, Any]], hyperparameters: Hyperparameters, method: str,
             seconds: float) -> dict[str, Any]:
    """The loss history from the Trainer's log, with what produced it."""
    return {
        "train": [{"step": e["step"], "epoch": e.get("epoch"), "loss": e["loss"]} for e in log_history if "loss" in e],
        "eval": [{"step": e["step"], "epoch": e.get("epoch"), "loss": e["eval_loss"]}
                 for e in log_history if "eval_loss" in e],
        "method": method,
        "hyperparameters": asdict(hyperparameters),
        "steps": max((e["step"] for e in log_history), default=0),
        "seconds": round(seconds, 1),
    }


def _record(request: FineTuneRequest, status: str, output: str | None = None,
            error: str | None = None) -> dict[str, Any]:
    return {
        "name": request.name,
        "job_id": request.job_id,
        "status": status,
        "error": error,
        "output_model": output,
        "experiment_name": request.experiment_name,
        "student_model": request.student_model,
        "method": request.method,
        "files": {"train": request.train_path, "validation": request.validation_path},
        "tags": dict(request.tags),
        "updated_at": datetime.now(UTC).isoformat(),
    }
