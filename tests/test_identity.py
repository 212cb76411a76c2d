"""A job's id follows from what determines its results, and from nothing else."""

from pathlib import Path

from shared.identity import file_digest, job_id
from shared.manifest.model import Manifest


def manifest(**fields: object) -> Manifest:
    base = {"task": "math", "training_file": Path("train.jsonl"),
            "teacher": {"kind": "openai_compatible", "url": "http://127.0.0.1:9/v1", "model": "big"}}
    return Manifest.model_validate({**base, **fields})


def test_same_inputs_same_id_and_readable_prefix() -> None:
    assert job_id(manifest(), ["d1"]) == job_id(manifest(), ["d1"])
    assert job_id(manifest(), ["d1"]).startswith("math-")


def test_results_changing_fields_change_the_id() -> None:
    base = job_id(manifest(), ["d1"])
    assert job_id(manifest(), ["d2"]) != base
    assert job_id(manifest(teacher={"kind": "openai_compatible", "url": "http://127.0.0.1:9/v1", "model": "x"}),
                  ["d1"]) != base
    assert job_id(manifest(inference={"temperature": 0.5}), ["d1"]) != base
    assert job_id(manifest(prompt={"chain_of_thought": True}), ["d1"]) != base
    assert job_id(manifest(student={"model": "other"}), ["d1"]) != base


def test_budget_and_rate_limits_do_not_change_the_id() -> None:
    base = job_id(manifest(), ["d1"])
    limits = {"budget_tokens": 1000, "requests_per_minute": 60, "tokens_per_minute": 1000, "concurrency": 3}
    assert job_id(manifest(limits=limits), ["d1"]) == base


def test_a_name_is_the_id(tmp_path: Path) -> None:
    assert job_id(manifest(name="my-job"), ["d1"]) == "my-job"
    data = tmp_path / "f.jsonl"
    data.write_bytes(b"abc")
    assert file_digest(data) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
