"""`distill validate`, `distill preview` and `distill sample` as a user runs them."""

import argparse
import json
import re
from pathlib import Path

import pytest

from shared.cli import main, parser
from shared.cli.run import build_manifest
from shared.local.models import TEACHER
from shared.local.samples import NLI_SYSTEM
from shared.manifest.model import TeacherKind

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "azureml"
FAKE_KEY = "sk-distill-test-4f2c9e7a1b"


def request_bodies(out: str) -> list[dict]:
    """The JSON bodies `distill preview` prints, each a block from a line "{" to a line "}"."""
    return [json.loads(block) for block in re.findall(r"^\{$.*?^\}$", out, re.S | re.M)]


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    return code, capsys.readouterr().out


def test_validate_passes_the_seed_files(capsys: pytest.CaptureFixture[str], shared_data: Path) -> None:
    files = [str(p) for p in sorted((shared_data / "seed" / "math").glob("*.jsonl"))]
    code, out = run(capsys, "validate", "--task", "math", *files)
    assert code == 0, out
    assert out.splitlines()[-1] == "OK: 2 files, 420 rows, 0 errors, 10 warnings"


def test_validate_reports_file_line_and_rule_and_fails(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    good = {"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "2+2?"}]}
    lines = [json.dumps(good), "{not json", json.dumps({"messages": [{"role": "robot", "content": "x"}]})]
    Path("bad.jsonl").write_text("\n".join(lines) + "\n")
    code, out = run(capsys, "validate", "--task", "math", "bad.jsonl")
    assert code == 1
    assert "bad.jsonl:2: json:" in out
    assert "bad.jsonl:3: unknown-role:" in out
    assert "bad.jsonl:0: too-few-rows:" in out
    assert out.splitlines()[-1].startswith("FAILED: 1 files, 1 rows,")


def test_validate_an_azureml_yaml_with_its_data(capsys: pytest.CaptureFixture[str], shared_data: Path) -> None:
    code, out = run(capsys, "validate", str(EXAMPLES / "nlu_qa.yaml"))
    assert code == 0, out
    assert out.splitlines()[-1] == "OK: 2 files, 768 rows, 0 errors, 0 warnings"


def test_validate_refuses_a_manifest_with_a_literal_key(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    manifest = tmp_path / "job.yaml"
    manifest.write_text(f"task: math\ntraining_file: t.jsonl\nteacher:\n  url: http://x/v1\n  api_key: {FAKE_KEY}\n")
    code, out = run(capsys, "validate", str(manifest))
    assert code == 1
    assert "key_setting" in out and FAKE_KEY not in out


def test_unknown_task_is_one_clear_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["validate", "--task", "poetry", str(tmp_path / "x.jsonl")]) == 2
    assert "unknown task 'poetry'" in capsys.readouterr().err


def test_sample_validate_preview_the_demo_path(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    out_dir = tmp_path / "demo"
    assert run(capsys, "sample", "--out", str(out_dir))[0] == 0
    code, out = run(capsys, "validate", str(out_dir / "manifest.yaml"))
    assert code == 0, out
    code, out = run(capsys, "preview", str(out_dir / "manifest.yaml"), "--rows", "2")
    assert code == 0, out
    assert out.count("POST http://127.0.0.1:8000/v1/chat/completions") == 2
    bodies = request_bodies(out)
    assert bodies[0]["messages"][0]["content"] == NLI_SYSTEM
    assert bodies[0]["model"] == "Qwen2.5-Coder-1.5B-Instruct" and bodies[0]["max_tokens"] == 16
    assert all(m["role"] != "assistant" for b in bodies for m in b["messages"])


def test_preview_names_the_key_setting_and_never_shows_the_key(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch,
                                                              shared_data: Path) -> None:
    monkeypatch.setenv("TEACHER_API_KEY", FAKE_KEY)
    code, out = run(capsys, "preview", str(EXAMPLES / "math.yaml"), "--rows", "1")
    assert code == 0, out
    assert "Authorization: Bearer <value of $TEACHER_API_KEY>" in out
    assert FAKE_KEY not in out
    [body] = request_bodies(out)
    assert body["messages"][-1]["content"].startswith("Question:")


def run_args(*argv: str) -> argparse.Namespace:
    return parser().parse_args(["run", "--task", "nli", "--train", "train.jsonl", *argv])


def test_no_teacher_option_means_the_packaged_local_teacher(tmp_path: Path) -> None:
    teacher = build_manifest(run_args()).teacher
    assert teacher.kind is TeacherKind.LOCAL and teacher.model == TEACHER.name
    manifest = tmp_path / "job.yaml"
    manifest.write_text("task: nli\ntraining_file: train.jsonl\n")
    (tmp_path / "train.jsonl").write_text("")  # a manifest's files must be there to run it
    assert build_manifest(parser().parse_args(["run", str(manifest)])).teacher.model == TEACHER.name


def test_teacher_model_without_a_url_says_what_is_missing(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--task", "nli", "--train", "train.jsonl", "--teacher-model", "gpt-4o"]) == 2
    err = capsys.readouterr().err
    assert "--teacher-url" in err and "--teacher local:MODEL" in err and len(err.strip().splitlines()) == 1


def test_teacher_model_renames_the_manifests_endpoint_model(tmp_path: Path) -> None:
    manifest = tmp_path / "job.yaml"
    manifest.write_text("task: nli\ntraining_file: train.jsonl\nteacher: {url: 'http://127.0.0.1:9/v1', model: a}\n")
    (tmp_path / "train.jsonl").write_text("")
    teacher = build_manifest(parser().parse_args(["run", str(manifest), "--teacher-model", "b"])).teacher
    assert teacher.url == "http://127.0.0.1:9/v1/chat/completions" and teacher.model == "b"
