"""bench.gpu: the packaged models' shapes without their weights, and a clear word where there is no GPU."""

import json

import pytest

from bench import gpu
from shared.local.models import STUDENT, model_folder


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
