"""`distill run` end to end on the seed data, against the project's test teacher."""

import json
from pathlib import Path

import pytest

from shared.cli import main

SEED_RUNS = {
    "nli": ["--chain-of-thought"],
    "nlu_qa": ["--chain-of-thought"],
    "math": ["--chain-of-thought"],
    "conversation": [],
    "summarization": ["--chain-of-density"],
}


def lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines() if path.exists() else []


def job_folder(home: Path) -> Path:
    [folder] = [p.parent for p in (home / "storage" / "jobs").glob("*/status.json")]
    return folder


@pytest.mark.parametrize("task", list(SEED_RUNS))
def test_every_seed_task_runs_and_every_row_lands_once(task: str, shared_data: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("DISTILL_HOME", str(tmp_path / "home"))
    seed = shared_data / "seed" / task
    files = ["--train", str(seed / "train.jsonl")] if (seed / "train.jsonl").exists() else []
    if (seed / "validation.jsonl").exists():
        flag = "--validation" if files else "--train"
        files += [flag, str(seed / "validation.jsonl")]
    code = main(["run", "--task", task, *files, "--teacher", "test", *SEED_RUNS[task], "--export-only",
                 "--out", str(tmp_path / "out")])
    captured = capsys.readouterr()
    assert code == 0, captured.out + captured.err
    inputs = sum(len(lines(Path(f))) for f in files[1::2])
    folder = job_folder(tmp_path / "home")
    train, validation, rejected = (lines(folder / name) for name in ("train.jsonl", "validation.jsonl",
                                                                      "rejected.jsonl"))
    assert len(train) + len(validation) + len(rejected) == inputs
    assert len({json.loads(r)["id"] for r in rejected}) == len(rejected)
    status = json.loads((folder / "status.json").read_text())
    assert status["state"] == "succeeded"
    assert status["accepted"] == {"train": len(train), "validation": len(validation)}
    assert (tmp_path / "out" / "train.jsonl").read_text() == (folder / "train.jsonl").read_text()
    record = json.loads(train[0])["messages"]
    assert record[0]["role"] == "system" and record[-1]["role"] == "assistant"


def test_no_finetune_stops_at_dataset_ready_and_a_rerun_calls_no_teacher(
        shared_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("DISTILL_HOME", str(tmp_path))
    gold = shared_data / "gold" / "math"
    argv = ["run", "--task", "math", "--train", str(gold / "train.jsonl"), "--validation",
            str(gold / "validation.jsonl"), "--teacher", "test", "--chain-of-thought", "--no-finetune"]
    assert main(argv) == 0
    status = json.loads((job_folder(tmp_path) / "status.json").read_text())
    assert status["state"] == "dataset ready" and "finetune" not in status
    assert status["accepted"] == {"train": 378, "validation": 42}
    before = (job_folder(tmp_path) / "train.jsonl").read_bytes()
    assert main(argv) == 0
    assert (job_folder(tmp_path) / "train.jsonl").read_bytes() == before
    assert "dataset ready" in capsys.readouterr().out


def test_too_few_labelled_rows_fail_the_job_with_a_reason(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("DISTILL_HOME", str(tmp_path / "home"))
    from shared.local.samples import write_nli_sample

    write_nli_sample(tmp_path / "data", rows=30, validation_rows=10)
    code = main(["run", "--task", "nli", "--train", str(tmp_path / "data" / "train.jsonl"), "--teacher", "test",
                 "--min-rows", "10", "--validation-fraction", "0.2", "--job", "small", "--export-only"])
    assert code == 0
    code = main(["run", "--task", "nli", "--train", str(tmp_path / "data" / "train.jsonl"), "--teacher", "test",
                 "--min-rows", "100", "--job", "too-small", "--export-only"])
    out = capsys.readouterr().out
    assert code == 1
    assert "too-few-rows" in out or "needs at least 100" in out


def test_a_run_with_azurite_as_storage(shared_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                       azurite_connection_string: str) -> None:
    monkeypatch.setenv("DISTILL_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("DISTILL_STORAGE_CONNECTION_STRING", azurite_connection_string)
    gold = shared_data / "gold" / "nli"
    code = main(["run", "--task", "nli", "--train", str(gold / "train.jsonl"), "--validation",
                 str(gold / "validation.jsonl"), "--teacher", "test", "--limit", "100", "--job", "on-azurite",
                 "--export-only", "--out", str(tmp_path / "out")])
    assert code == 0
    assert not (tmp_path / "home" / "storage").exists()
    status = json.loads((tmp_path / "out" / "status.json").read_text())
    assert status["state"] == "succeeded"
    assert status["accepted"] == {"train": 100, "validation": 100}
    assert len(lines(tmp_path / "out" / "train.jsonl")) == 100


def test_restart_discards_the_job_and_does_it_again(shared_data: Path, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISTILL_HOME", str(tmp_path))
    gold = shared_data / "gold" / "nli"
    argv = ["run", "--task", "nli", "--train", str(gold / "train.jsonl"), "--teacher", "test", "--limit", "80",
            "--min-rows", "20", "--no-finetune", "--job", "again"]
    assert main(argv) == 0
    status = tmp_path / "storage" / "jobs" / "again" / "status.json"
    first = json.loads(status.read_text())["created"]
    assert main(argv) == 0
    assert json.loads(status.read_text())["created"] == first
    assert main([*argv, "--restart"]) == 0
    assert json.loads(status.read_text())["created"] > first


def test_a_dataset_ready_job_goes_on_to_the_fine_tune_when_run_without_no_finetune(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, shared_data: Path) -> None:
    monkeypatch.setenv("DISTILL_HOME", str(tmp_path))
    gold = shared_data / "gold" / "nli"
    argv = ["run", "--task", "nli", "--train", str(gold / "train.jsonl"), "--teacher", "test", "--limit", "80",
            "--min-rows", "20", "--job", "later", "--export-only"]
    assert main([*argv, "--no-finetune"]) == 0
    status = tmp_path / "storage" / "jobs" / "later" / "status.json"
    assert json.loads(status.read_text())["state"] == "dataset ready"
    assert main(argv) == 0
    record = json.loads(status.read_text())
    assert record["state"] == "succeeded" and record["finetune"]["status"] == "Completed"


@pytest.mark.parametrize(("device", "workers", "concurrency", "in_flight"),
                         [("cpu", 4, None, 2), ("cpu", 1, None, 8), ("cpu", 2, 3, 3), ("cpu", 16, None, 1),
                          ("cuda", 4, None, 64), ("cuda", 1, None, 100), ("cuda", 4, 10, 10)])
def test_a_local_model_teacher_gets_as_many_requests_as_its_device_batches(
        monkeypatch: pytest.MonkeyPatch, device: str, workers: int, concurrency: int | None, in_flight: int) -> None:
    from shared.local.run import LOCAL_TEACHER_TIMEOUT, TEST_TEACHER, fit_local_model_teacher
    from shared.manifest.load import manifest_from_dict

    monkeypatch.setenv("DISTILL_DEVICE", device)  # a GPU answers 256 at once, a CPU 8

    def manifest(model: str):
        limits = {} if concurrency is None else {"concurrency": concurrency}
        return manifest_from_dict({"task": "nli", "training_file": "t.jsonl", "limits": limits,
                                   "teacher": {"kind": "local", "model": model}}, Path.cwd(), source="test")

    fitted = fit_local_model_teacher(manifest("Qwen2.5-Coder-1.5B-Instruct"), workers)
    assert (fitted.limits.concurrency, fitted.teacher.timeout_seconds) == (in_flight, LOCAL_TEACHER_TIMEOUT)
    assert fit_local_model_teacher(manifest(TEST_TEACHER), workers) == manifest(TEST_TEACHER)
