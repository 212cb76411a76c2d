"""Loading manifests: native YAML/JSON and AzureML distillation YAML, their rules, and key handling."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from shared.manifest.azureml import FIELD_MAP, azure_path, from_azureml
from shared.manifest.load import is_data_asset, load_manifest, manifest_from_dict
from shared.manifest.model import Manifest, ManifestError, TeacherAuth, TeacherKind
from shared.tasks import Task

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples" / "azureml"
SHARED_DATA = ROOT.parent / "shared" / "data"
FAKE_KEY = "sk-FAKE-distill-3c9d1e7f5a2b8c4d"
TASKS = ["nli", "nlu_qa", "math", "conversation", "summarization"]


@pytest.fixture
def seed() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"{SHARED_DATA} is missing")
    return SHARED_DATA / "seed"


def example(task: str) -> dict[str, Any]:
    return yaml.safe_load((EXAMPLES / f"{task}.yaml").read_text(encoding="utf-8"))


def refused(doc: dict[str, Any], base: Path = EXAMPLES) -> ManifestError:
    with pytest.raises(ManifestError) as caught:
        manifest_from_dict(doc, base, source="job.yaml")
    return caught.value


def assert_silent_about(error: ManifestError, value: str) -> None:
    """The value appears nowhere: not in the message, the repr, the problems, nor any chained exception."""
    seen: BaseException | None = error
    while seen is not None:
        assert value not in str(seen) and value not in repr(seen)
        seen = seen.__cause__ or seen.__context__
    assert all(value not in p for p in error.problems)


def native(**fields: Any) -> dict[str, Any]:
    return {"task": "nli", "training_file": "train.jsonl", **fields}


# --- the AzureML examples --------------------------------------------------------------------------------


@pytest.mark.parametrize("task", TASKS)
def test_each_example_loads_with_its_seed_files(task: str, seed: Path) -> None:
    m = load_manifest(EXAMPLES / f"{task}.yaml")
    assert m.task is Task.parse(task)
    first = "validation.jsonl" if task == "summarization" else "train.jsonl"
    assert m.training_file == (seed / task / first).resolve()
    assert m.training_file.is_file()
    if task == "summarization":
        assert m.validation_file is None
    else:
        assert m.validation_file == (seed / task / "validation.jsonl").resolve()
        assert m.validation_file.is_file()
    assert m.teacher.kind is TeacherKind.AZURE_AI
    assert ".models.ai.azure.com/" in m.teacher.url and m.teacher.url.endswith("/chat/completions")
    assert m.teacher.key_setting == "TEACHER_API_KEY"
    assert m.teacher.effective_auth is TeacherAuth.KEY
    assert m.student.backend == "azureml"
    assert m.prompt.chain_of_thought is (task in ("nli", "nlu_qa", "math"))
    assert m.prompt.chain_of_density is (task == "summarization")
    assert all(isinstance(v, str) for v in m.student.hyperparameters.values())
    assert m.output_model_name


@pytest.mark.parametrize("task", TASKS)
def test_each_example_with_a_literal_key_is_refused_without_showing_it(task: str, tmp_path: Path) -> None:
    text = (EXAMPLES / f"{task}.yaml").read_text(encoding="utf-8")
    written = text.replace("api_key_setting: TEACHER_API_KEY", f"api_key: {FAKE_KEY}")
    assert written != text
    job = tmp_path / f"{task}.yaml"
    job.write_text(written, encoding="utf-8")
    with pytest.raises(ManifestError) as caught:
        load_manifest(job)
    error = caught.value
    assert error.problems == [str(error)]
    assert str(error).startswith(f"{job}: teacher_model_endpoint_connection.api_key: a key must never be")
    assert "api_key_setting: <NAME>" in str(error)
    assert_silent_about(error, FAKE_KEY)


def test_a_key_beside_the_setting_is_refused_too() -> None:
    doc = example("math")
    doc["teacher_model_endpoint_connection"]["API_KEY"] = FAKE_KEY
    error = refused(doc)
    assert "teacher_model_endpoint_connection.API_KEY: a key must never be written" in str(error)
    assert_silent_about(error, FAKE_KEY)


def test_azureml_fields_map_to_the_native_ones() -> None:
    doc = example("nlu_qa")
    doc.update({"$schema": "https://example.invalid/schema.json", "name": "qa-1", "description": "d",
                "resources": {"instance_type": "Standard_NC24ads_A100_v4"},
                "hyperparameters": {"n_epochs": 3, "learning_rate_multiplier": 0.5, "packing": True}})
    out = from_azureml(doc)
    assert out["task"] == "nlu_qa"
    assert out["teacher"] == {"kind": "azure_ai", "auth": "key", "key_setting": "TEACHER_API_KEY",
                              "model": "Meta-Llama-3-1-405B-Instruct-xyz",
                              "url": "https://Meta-Llama-3-1-405B-Instruct-xyz.eastus2.models.ai.azure.com/chat/completions"}
    assert out["limits"] == {"concurrency": 8}
    assert out["min_success_ratio"] == 0.8
    assert out["student"] == {"model": "azureml://registries/azureml/models/Phi-3.5-mini-instruct/versions/4",
                              "hyperparameters": {"n_epochs": "3", "learning_rate_multiplier": "0.5",
                                                  "packing": "true"},
                              "instance_type": "Standard_NC24ads_A100_v4"}
    m = manifest_from_dict(doc, EXAMPLES)
    assert (m.name, m.description, m.display_name) == ("qa-1", "d", doc["display_name"])
    assert m.output_model_name == "phi-3-5-mini-distilled-nlu-qa"
    assert (m.inference.temperature, m.inference.top_p, m.inference.max_tokens) == (0.2, 0.9, 1024)


def test_an_azureml_teacher_without_a_key_setting_uses_entra() -> None:
    doc = example("nli")
    del doc["teacher_model_endpoint_connection"]["api_key_setting"]
    m = manifest_from_dict(doc, EXAMPLES)
    assert m.teacher.auth is TeacherAuth.ENTRA and m.teacher.key_setting is None


def test_azureml_short_forms_and_data_assets() -> None:
    doc = example("math")
    doc["training_data"] = "azureml:math-train:1"
    doc["validation_data"] = {"type": "URI_FILE", "path": "azureml:math-validation:2"}
    doc["prompt_settings"] = None
    m = manifest_from_dict(doc, EXAMPLES)
    assert str(m.training_file) == "azureml:math-train:1" and is_data_asset(m.training_file)
    assert str(m.validation_file) == "azureml:math-validation:2"
    assert m.prompt.chain_of_thought is False


INFERENCE = "teacher_model_settings.inference_parameters"
REQUESTS = "teacher_model_settings.endpoint_request_settings"


@pytest.mark.parametrize(("change", "expected"), [
    (lambda d: d["teacher_model_settings"]["inference_parameters"].update(temperature=1.5),
     f"{INFERENCE}.temperature: must be less than or equal to 1"),
    (lambda d: d["teacher_model_settings"]["inference_parameters"].update(top_p=-0.1),
     f"{INFERENCE}.top_p: must be greater than or equal to 0"),
    (lambda d: d["teacher_model_settings"]["inference_parameters"].update(frequency_penalty=2.5),
     f"{INFERENCE}.frequency_penalty: must be less than or equal to 2"),
    (lambda d: d["teacher_model_settings"]["endpoint_request_settings"].update(request_batch_size=0),
     f"{REQUESTS}.request_batch_size: must be greater than 0"),
    (lambda d: d["teacher_model_settings"]["endpoint_request_settings"].update(request_batch_size=101),
     f"{REQUESTS}.request_batch_size: must be less than or equal to 100"),
    (lambda d: d["teacher_model_settings"]["endpoint_request_settings"].update(min_endpoint_success_ratio=-1),
     f"{REQUESTS}.min_endpoint_success_ratio: must be greater than or equal to 0"),
    (lambda d: d.update(data_generation_task_type="CONVERSATION"),
     "prompt_settings.enable_chain_of_thought: not available for CONVERSATION"),
    (lambda d: d.update(prompt_settings={"enable_chain_of_density": True}),
     "prompt_settings.enable_chain_of_density: only for SUMMARIZATION"),
    (lambda d: d["prompt_settings"].update(max_len_summary=80),
     "prompt_settings.max_len_summary: only for SUMMARIZATION"),
    (lambda d: d.update(data_generation_type="data_generation"),
     "data_generation_type: must be `label_generation`"),
    (lambda d: d.update(type="pipeline"), "type: must be `distillation`"),
    (lambda d: d["training_data"].update(type="uri_folder"), "training_data.type: must be `uri_file`"),
    (lambda d: d["outputs"]["registered_model"].update(type="custom_model"),
     "outputs.registered_model.type: must be `mlflow_model`"),
    (lambda d: d.update(data_generation_task_type="poetry"), "data_generation_task_type: not a known task"),
    (lambda d: d["teacher_model_endpoint_connection"].update(api_key_setting="TEACHER-KEY"),
     "teacher_model_endpoint_connection.api_key_setting: must be the NAME of an environment variable"),
    (lambda d: d["teacher_model_endpoint_connection"].update(endpoint="ftp://host"),
     "teacher_model_endpoint_connection.endpoint: must be an http:// or https:// URL"),
    (lambda d: d.update(hyperparameters={"n_epochs": ["3"]}),
     "hyperparameters: every value must be a string"),
    (lambda d: d["training_data"].update(path="https://host/train.jsonl"),
     "training_data.path: a URL is not read"),
    (lambda d: d.update(training_data=["train.jsonl"]), "training_data: must be a mapping of fields"),
])
def test_azureml_rules(change: Any, expected: str) -> None:
    doc = example("nli")
    change(doc)
    assert expected in str(refused(doc))


def test_summarization_takes_density_and_a_summary_length() -> None:
    doc = example("summarization")
    doc["prompt_settings"]["max_len_summary"] = 60
    assert manifest_from_dict(doc, EXAMPLES).prompt.max_len_summary == 60
    doc["prompt_settings"]["enable_chain_of_thought"] = True
    assert "prompt_settings.enable_chain_of_thought: not available for SUMMARIZATION" in str(refused(doc))


@pytest.mark.parametrize("path", ["data_generation_task_type", "training_data", "student_model",
                                  "teacher_model_endpoint_connection.endpoint",
                                  "teacher_model_endpoint_connection.name"])
def test_azureml_required_fields(path: str) -> None:
    doc = example("nli")
    *parents, last = path.split(".")
    node = doc
    for part in parents:
        node = node[part]
    del node[last]
    expected = "training_data.path" if path == "training_data" else path
    assert f"job.yaml: {expected}: required" in refused(doc).problems


def test_validation_data_is_optional_for_azureml_here() -> None:
    doc = example("nli")
    del doc["validation_data"]
    assert manifest_from_dict(doc, EXAMPLES).validation_file is None


def test_azureml_unknown_fields_are_named_with_a_suggestion() -> None:
    doc = example("nli")
    doc["teacher_model_settings"]["inference_parameters"]["temprature"] = 0.5
    doc["prompt_settings"]["enable_chain_of_thougt"] = True
    doc["compute"] = "gpu-cluster"
    problems = refused(doc).problems
    assert ("job.yaml: teacher_model_settings.inference_parameters.temprature: not a field of an AzureML "
            "distillation job; did you mean `temperature`?") in problems
    assert any(p.startswith("job.yaml: prompt_settings.enable_chain_of_thougt:") and
               "`enable_chain_of_thought`" in p for p in problems)
    assert any(p.startswith("job.yaml: compute: not a field") for p in problems)


def test_an_empty_api_key_is_an_unknown_field_pointing_at_the_setting() -> None:
    doc = example("nli")
    doc["teacher_model_endpoint_connection"]["api_key"] = ""
    assert "did you mean `api_key_setting`?" in str(refused(doc))


def test_azure_paths_map_back() -> None:
    assert azure_path("inference.top_p") == f"{INFERENCE}.top_p"
    assert azure_path("student.hyperparameters.n_epochs") == "hyperparameters.n_epochs"
    assert azure_path("limits.concurrency") == f"{REQUESTS}.request_batch_size"
    assert azure_path("prompt.keep_reasoning") == "prompt.keep_reasoning"


# --- native manifests ------------------------------------------------------------------------------------


NATIVE_YAML = """\
task: math
training_file: data/train.jsonl
teacher:
  url: http://127.0.0.1:8000/v1
  key_setting: TEACHER_API_KEY
"""


def test_a_native_yaml_manifest_loads_with_defaults(tmp_path: Path) -> None:
    (tmp_path / "job.yaml").write_text(NATIVE_YAML, encoding="utf-8")
    m = load_manifest(tmp_path / "job.yaml")
    assert m.task is Task.MATH
    assert m.training_file == (tmp_path / "data" / "train.jsonl").resolve()
    assert m.validation_file is None and m.validation_fraction == 0.1
    assert m.min_success_ratio == 0.7 and m.min_rows is None and m.effective_min_rows == 40
    assert m.teacher.kind is TeacherKind.OPENAI_COMPATIBLE and m.teacher.effective_auth is TeacherAuth.KEY
    assert (m.teacher.model, m.teacher.timeout_seconds, m.teacher.max_retries) == ("teacher", 180.0, 4)
    assert (m.inference.temperature, m.inference.top_p, m.inference.max_tokens) == (0.0, 1.0, 1024)
    assert m.prompt.model_dump() == {"chain_of_thought": False, "chain_of_density": False,
                                     "max_len_summary": 80, "keep_reasoning": False, "samples": 1}
    assert m.student.model == "SmolLM2-135M-Instruct" and m.student.instance_type is None
    assert m.limits.concurrency == 10 and m.limits.max_rows == 1_000_000 and m.limits.budget_tokens is None
    assert (m.experiment_name, m.name, m.output_model_name, m.tags) == ("distill", None, None, {})


def test_a_native_json_manifest_loads_with_defaults(tmp_path: Path) -> None:
    (tmp_path / "job.json").write_text(json.dumps(native(validation_file="v.jsonl")), encoding="utf-8")
    m = load_manifest(tmp_path / "job.json")
    assert m.task is Task.NLI and m.effective_min_rows == 65
    assert m.validation_file == (tmp_path / "v.jsonl").resolve()
    assert m.teacher.kind is TeacherKind.LOCAL and m.teacher.effective_auth is TeacherAuth.NONE


def test_the_format_is_told_by_content(tmp_path: Path) -> None:
    (tmp_path / "job.yml").write_text(json.dumps(native()), encoding="utf-8")
    (tmp_path / "job.txt").write_text("\ufefftask: Nlu-Qa\ntraining_file: t.jsonl\n", encoding="utf-8")
    assert load_manifest(tmp_path / "job.yml").task is Task.NLI
    assert load_manifest(tmp_path / "job.txt").task is Task.NLU_QA


def test_relative_paths_resolve_against_the_manifest_folder(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "jobs").mkdir()
    (tmp_path / "jobs" / "job.yaml").write_text(
        f"task: nli\ntraining_file: ../data/t.jsonl\nvalidation_file: {tmp_path / 'abs' / 'v.jsonl'}\n")
    monkeypatch.chdir(tmp_path)
    m = load_manifest(Path("jobs/job.yaml"))
    assert m.training_file == (tmp_path / "data" / "t.jsonl").resolve()
    assert m.validation_file == tmp_path / "abs" / "v.jsonl"
    elsewhere = manifest_from_dict(native(), tmp_path / "x")
    assert elsewhere.training_file == (tmp_path / "x" / "train.jsonl").resolve()


@pytest.mark.parametrize(("fields", "expected"), [
    ({"inference": {"temperature": 1.5}}, "inference.temperature: must be less than or equal to 1"),
    ({"inference": {"presence_penalty": -1}}, "inference.presence_penalty: must be greater than or equal"),
    ({"inference": {"stop": ["a", "b", "c", "d", "e"]}}, "inference.stop: must have at most 4 items"),
    ({"min_success_ratio": 1.5}, "min_success_ratio: must be less than or equal to 1"),
    ({"limits": {"concurrency": 0}}, "limits.concurrency: must be greater than 0"),
    ({"validation_fraction": 1}, "validation_fraction: must be less than 1"),
    ({"task": "conversation", "prompt": {"chain_of_thought": True}},
     "prompt.chain_of_thought: not available for CONVERSATION (only for NLI, NLU_QA, MATH)"),
    ({"task": "summarization", "prompt": {"chain_of_thought": True}},
     "prompt.chain_of_thought: not available for SUMMARIZATION"),
    ({"prompt": {"chain_of_density": True}}, "prompt.chain_of_density: only for SUMMARIZATION, not NLI"),
    ({"prompt": {"keep_reasoning": True}}, "prompt.keep_reasoning: needs prompt.chain_of_thought"),
    ({"prompt": {"max_len_summary": 50}}, "prompt.max_len_summary: only for SUMMARIZATION"),
    ({"task": "poetry"},
     "task: not a known task (expected one of NLI, NLU_QA, MATH, CONVERSATION, SUMMARIZATION)"),
    ({"teacher": {"url": "http://h/v1", "key_setting": "1KEY"}}, "teacher.key_setting: must be the NAME"),
    ({"teacher": {"url": "http://h/v1", "key_setting": "MY-KEY"}}, "teacher.key_setting: must be the NAME"),
    ({"teacher": {"kind": "azure_openai"}}, "teacher.url: required for every teacher kind but local"),
    ({"teacher": {"url": "http://h/v1", "auth": "key"}}, "teacher.key_setting: required when auth is 'key'"),
    ({"teacher": {"url": "h/v1"}}, "teacher.url: must be an http:// or https:// URL"),
    ({"student": {"method": "qlora"}}, "student.method: must be 'full' or 'lora'"),
    ({"name": "My Job"}, "name: a job id is 1 to 255 letters, digits, '-' and '_'"),
    ({"training_file": ""}, "training_file: must not be empty"),
    ({"training_file": "https://host/t.jsonl"}, "training_file: a URL is not read"),
])
def test_native_rules(fields: dict[str, Any], expected: str) -> None:
    assert f"job.yaml: {expected}" in str(refused(native(**fields)))


def test_summarization_takes_density_and_its_length() -> None:
    prompt = {"chain_of_density": True, "max_len_summary": 50}
    m = manifest_from_dict(native(task="summarization", prompt=prompt), EXAMPLES)
    assert m.prompt.chain_of_density and m.prompt.max_len_summary == 50


def test_unknown_fields_are_named_with_the_closest_known_name() -> None:
    problems = refused(native(inference={"temprature": 0.3}, limits={"concurency": 2}, bogus=1)).problems
    assert "job.yaml: inference.temprature: unknown field; did you mean `temperature`?" in problems
    assert "job.yaml: limits.concurency: unknown field; did you mean `concurrency`?" in problems
    assert any(p.startswith("job.yaml: bogus: unknown field (expected one of: task,") for p in problems)


def test_missing_required_fields_are_each_reported() -> None:
    assert refused({}).problems == ["job.yaml: task: required", "job.yaml: training_file: required"]


def test_every_problem_is_reported_at_once() -> None:
    error = refused(native(inference={"temperature": 2, "top_p": 3}, limits={"concurrency": 500}))
    assert len(error.problems) == 3
    assert str(error) == "\n".join(error.problems)
    assert isinstance(error, ValueError)


def test_overrides_are_validated_the_same_way() -> None:
    m = manifest_from_dict(native(), EXAMPLES)
    assert m.with_overrides(min_rows=5).effective_min_rows == 5
    with pytest.raises(ManifestError, match=r"^overrides: min_success_ratio: must be less than or equal"):
        m.with_overrides(min_success_ratio=2)


# --- keys and values never shown -------------------------------------------------------------------------


@pytest.mark.parametrize("doc", [
    native(teacher={"url": "http://h/v1", "api_key": FAKE_KEY}),
    native(teacher={"url": "http://h/v1", "Api_Key": FAKE_KEY}),
    native(teacher={"url": "http://h/v1", "api-key": FAKE_KEY}),
    native(tags={"token": FAKE_KEY}),
    native(student={"hyperparameters": {"password": FAKE_KEY}}),
    native(extras=[{"connection_string": FAKE_KEY}]),
    native(secret=FAKE_KEY, key=FAKE_KEY, apikey=FAKE_KEY),
])
def test_a_literal_key_anywhere_is_refused_before_validation(doc: dict[str, Any]) -> None:
    error = refused(doc)
    assert all("a key must never be written in a manifest" in p and "teacher.key_setting" in p
               for p in error.problems)
    assert all("unknown field" not in p for p in error.problems)  # refused before the model saw it
    assert_silent_about(error, FAKE_KEY)


def test_the_native_key_message_says_what_to_do() -> None:
    error = refused(native(teacher={"url": "http://h/v1", "api_key": FAKE_KEY}))
    assert error.problems == [
        "job.yaml: teacher.api_key: a key must never be written in a manifest; store it in an environment "
        "variable or app setting and name that setting in teacher.key_setting (for example "
        "`key_setting: TEACHER_API_KEY`)"]


@pytest.mark.parametrize(("teacher", "expected"), [
    ({"url": f"https://h.openai.azure.com/v1?api-key={FAKE_KEY}"}, "teacher.url: this URL carries a key"),
    ({"url": f"https://user:{FAKE_KEY}@h/v1"}, "teacher.url: this URL carries a password"),
    ({"url": "http://h/v1", "key_setting": "a1b2c3d4e5f60718293a4b5c6d7e8f90"},
     "teacher.key_setting: this looks like a key"),
])
def test_keys_hidden_in_urls_and_setting_names_are_refused(teacher: dict[str, str], expected: str) -> None:
    error = refused(native(teacher=teacher))
    assert expected in str(error)
    assert_silent_about(error, FAKE_KEY)
    assert_silent_about(error, "a1b2c3d4e5f60718293a4b5c6d7e8f90")


def test_a_key_pasted_as_a_field_name_is_not_shown() -> None:
    error = refused(native(teacher={"url": "http://h/v1", FAKE_KEY: "x"}))
    assert str(error).startswith("job.yaml: teacher: a field name here looks like a key")
    assert_silent_about(error, FAKE_KEY)


def test_an_empty_key_field_is_not_a_key() -> None:
    error = refused(native(teacher={"url": "http://h/v1", "api_key": ""}))
    assert error.problems == ["job.yaml: teacher.api_key: unknown field (expected one of: kind, url, model, "
                              "api_version, auth, key_setting, timeout_seconds, max_retries)"]


SENTINEL = "zz-sentinel-9f8e7d"


@pytest.mark.parametrize("fields", [
    {"task": SENTINEL},
    {"name": f"{SENTINEL}.upper"},
    {"inference": {"temperature": SENTINEL, "stop": SENTINEL, "seed": SENTINEL}},
    {"teacher": {"kind": SENTINEL, "url": SENTINEL, "key_setting": SENTINEL, "auth": SENTINEL}},
    {"teacher": {"url": SENTINEL}},
    {"student": {"hyperparameters": {"lr": [SENTINEL]}, "method": SENTINEL}},
    {"tags": {"team": [SENTINEL]}, "min_rows": SENTINEL, "limits": SENTINEL},
    {"unknown": SENTINEL, "prompt": {"chain_of_thought": SENTINEL}},
])
def test_errors_never_echo_values(fields: dict[str, Any]) -> None:
    error = refused(native(**fields))
    assert error.problems
    assert_silent_about(error, SENTINEL)
    assert_silent_about(error, SENTINEL.upper())


def test_azureml_errors_never_echo_values() -> None:
    doc = example("nli")
    doc["data_generation_task_type"] = SENTINEL
    doc["teacher_model_endpoint_connection"]["endpoint"] = SENTINEL
    doc["teacher_model_settings"]["inference_parameters"]["max_tokens"] = SENTINEL
    doc["type"] = SENTINEL
    error = refused(doc)
    assert len(error.problems) >= 1
    assert_silent_about(error, SENTINEL)


# --- files -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "content", "expected"), [
    ("bad.yaml", f"task: nli\nteacher: [\n  {FAKE_KEY}\n", "bad.yaml:4:1: invalid YAML:"),
    ("bad.json", f'{{"task": "nli", "teacher": "{FAKE_KEY}",}}', "bad.json:1:"),
    ("dup.yaml", "task: nli\ntraining_file: a\ntask: math\n",
     "dup.yaml:3:1: invalid YAML: duplicate field `task`"),
    ("dup.json", '{"task": "nli", "task": "math"}', "dup.json: invalid JSON: duplicate field `task`"),
    ("empty.yaml", "\n  \n", "empty.yaml: the file is empty"),
    ("list.yaml", "- task: nli\n", "list.yaml: must be a mapping of fields"),
])
def test_unreadable_documents(tmp_path: Path, name: str, content: str, expected: str) -> None:
    (tmp_path / name).write_text(content, encoding="utf-8")
    with pytest.raises(ManifestError) as caught:
        load_manifest(tmp_path / name)
    assert str(caught.value).startswith(f"{tmp_path}/{expected}")
    assert_silent_about(caught.value, FAKE_KEY)


def test_a_file_that_is_not_utf8_or_missing(tmp_path: Path) -> None:
    (tmp_path / "latin1.yaml").write_bytes("task: nli\ndescription: caf\xe9\n".encode("latin-1"))
    with pytest.raises(ManifestError, match=r"latin1\.yaml: not UTF-8 text \(byte 26\)"):
        load_manifest(tmp_path / "latin1.yaml")
    with pytest.raises(ManifestError, match=r"missing\.yaml: cannot read the file"):
        load_manifest(tmp_path / "missing.yaml")


# --- the documentation -----------------------------------------------------------------------------------


def test_the_doc_examples_load() -> None:
    doc = (ROOT / "docs" / "manifest.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```yaml\n(.*?)```", doc, re.DOTALL)
    assert len(blocks) == 2
    loaded = [manifest_from_dict(yaml.safe_load(block), ROOT) for block in blocks]
    assert [m.task for m in loaded] == [Task.NLU_QA, Task.MATH]


def field_paths(model: type[BaseModel], prefix: str = "") -> list[str]:
    paths = []
    for name, field in model.model_fields.items():
        paths.append(prefix + name)
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            paths += field_paths(field.annotation, f"{prefix}{name}.")
    return paths


def test_the_doc_names_every_field_and_every_azureml_field() -> None:
    doc = (ROOT / "docs" / "manifest.md").read_text(encoding="utf-8")
    quoted = set(re.findall(r"`([^`\s]+)`", doc))
    assert [p for p in field_paths(Manifest) if p not in quoted] == []
    assert [p for p in FIELD_MAP if p not in quoted] == []
    assert {"teacher.key_setting", "student.instance_type", "limits.max_rows"} <= set(field_paths(Manifest))
