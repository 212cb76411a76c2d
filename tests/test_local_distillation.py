"""The real local path on a small slice: a local teacher server, TRL fine-tuning on the CPU, the evaluation step
(the students served on this machine and asked over HTTP) and its report.

SmolLM2-135M plays both teacher and student to keep it quick; `make demo` runs the same path with the 1.5B teacher.
"""

import json
from pathlib import Path

import pytest
from safetensors.torch import load_file

from shared.cli import main
from shared.local.models import model_folder

THINGS = ["apple", "river", "violin", "bicycle", "library", "volcano", "compass", "candle", "bridge", "garden",
          "rocket", "teapot", "island", "ladder", "mirror", "pencil", "glacier", "lantern", "harbour", "kite",
          "tractor", "museum", "umbrella", "windmill"]


def write_conversations(folder: Path) -> None:
    """Short one-turn conversations a 135M model answers briefly (its answers end before max_tokens)."""
    folder.mkdir(parents=True)
    system = {"role": "system", "content": "You are a helpful assistant. Answer in one short sentence."}
    rows = [{"messages": [system, {"role": "user", "content": f"What is a {thing}?"},
                          {"role": "assistant", "content": f"A {thing} is a thing."}]} for thing in THINGS]
    for name, part in (("train.jsonl", rows[:16]), ("validation.jsonl", rows[16:])):
        (folder / name).write_text("".join(json.dumps(r) + "\n" for r in part))


MANIFEST = """\
task: conversation
training_file: train.jsonl
validation_file: validation.jsonl
teacher:
  kind: local
  model: SmolLM2-135M-Instruct
inference:
  max_tokens: 96
student:
  model: SmolLM2-135M-Instruct
  hyperparameters:
    max_steps: 3
    batch_size: 4
min_rows: 2
min_success_ratio: 0.5
"""


def test_a_small_real_distillation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("DISTILL_HOME", str(tmp_path / "home"))
    data = tmp_path / "data"
    write_conversations(data)
    (data / "manifest.yaml").write_text(MANIFEST)
    code = main(["run", str(data / "manifest.yaml"), "--job", "smoke", "--out", str(tmp_path / "out")])
    out = capsys.readouterr().out
    status = json.loads((tmp_path / "out" / "status.json").read_text())
    assert code == 0, out + json.dumps(status["errors"])
    assert status["state"] == "succeeded"
    assert status["finetune"]["status"] == "Completed"  # the run event reached run_events
    trained = Path(status["finetune"]["output_model"])
    base = load_file(model_folder("SmolLM2-135M-Instruct") / "model.safetensors")
    tuned = load_file(trained / "model.safetensors")
    changed = [name for name in base if name in tuned and not base[name].float().equal(tuned[name].float())]
    assert changed, "training left every weight as it was"
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["n"] == 8 and set(report["scores"]) == {"teacher", "base", "distilled"}
    assert status["evaluation"]["scores"] == report["scores"] and status["evaluation"]["rows"] == 8
    assert report["tokens"]["distilled"]["completion"] > 0  # the students were asked over HTTP
    rows = (tmp_path / "out" / "evaluation.jsonl").read_text().splitlines()
    assert len(rows) == 3 * 8
    assert (tmp_path / "out" / "report.png").read_bytes().startswith(b"\x89PNG")
    assert "distilled student" in out
