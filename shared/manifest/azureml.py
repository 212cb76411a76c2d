"""Read an AzureML `type: distillation` job YAML into a native manifest dict.

The AzureML shape is accepted field for field (see `FIELD_MAP`); anything else is an error naming the field.
One extension: `teacher_model_endpoint_connection.api_key_setting` names the environment variable or app
setting that holds the teacher key. A literal `api_key`, which AzureML itself takes, is refused.
"""

from __future__ import annotations

import difflib
from typing import Any

from shared.manifest.endpoints import kind_of
from shared.manifest.model import InferenceParameters, ManifestError, tasks_with
from shared.manifest.secrets import find_secrets
from shared.tasks import Task

AZURE_KEY_ADVICE = ("a key must never be written in a manifest; remove it, keep the key in an environment "
                    "variable or app setting and name that setting instead: `api_key_setting: <NAME>` under "
                    "teacher_model_endpoint_connection (for example `api_key_setting: TEACHER_API_KEY`)")

_CONNECTION = "teacher_model_endpoint_connection"
_INFERENCE = "teacher_model_settings.inference_parameters"
_REQUESTS = "teacher_model_settings.endpoint_request_settings"

# AzureML field path -> native manifest path; None: accepted and checked here, not carried over.
FIELD_MAP: dict[str, str | None] = {
    "$schema": None,
    "type": None,
    "name": "name",
    "display_name": "display_name",
    "description": "description",
    "experiment_name": "experiment_name",
    "tags": "tags",
    "data_generation_type": None,
    "data_generation_task_type": "task",
    "training_data.type": None,
    "training_data.path": "training_file",
    "validation_data.type": None,
    "validation_data.path": "validation_file",
    f"{_CONNECTION}.type": None,
    f"{_CONNECTION}.name": "teacher.model",
    f"{_CONNECTION}.endpoint": "teacher.url",
    f"{_CONNECTION}.api_key_setting": "teacher.key_setting",
    "student_model": "student.model",
    "outputs.registered_model.type": None,
    "outputs.registered_model.name": "output_model_name",
    **{f"{_INFERENCE}.{name}": f"inference.{name}" for name in InferenceParameters.model_fields},
    f"{_REQUESTS}.request_batch_size": "limits.concurrency",
    f"{_REQUESTS}.min_endpoint_success_ratio": "min_success_ratio",
    "prompt_settings.enable_chain_of_thought": "prompt.chain_of_thought",
    "prompt_settings.enable_chain_of_density": "prompt.chain_of_density",
    "prompt_settings.max_len_summary": "prompt.max_len_summary",
    "hyperparameters": "student.hyperparameters",
    "resources.instance_type": "student.instance_type",
}
# Fields whose only accepted value is fixed (compared without regard to case, as AzureML does).
FIXED_VALUES = {
    "type": "distillation",
    "data_generation_type": "label_generation",
    "training_data.type": "uri_file",
    "validation_data.type": "uri_file",
    f"{_CONNECTION}.type": "serverless",
    "outputs.registered_model.type": "mlflow_model",
}
_FIXED_NOTES = {"data_generation_type": " (the only data generation type supported)"}
REQUIRED = ("data_generation_task_type", "training_data.path", f"{_CONNECTION}.name",
            f"{_CONNECTION}.endpoint", "student_model")
_SECTIONS = {path.rsplit(".", i)[0] for path in FIELD_MAP for i in range(1, path.count(".") + 1)}
_DATA_SECTIONS = ("training_data", "validation_data")
_NATIVE_TO_AZURE = {native: azure for azure, native in FIELD_MAP.items() if native}


def is_azureml(doc: dict) -> bool:
    """An AzureML job document: it says what `type` of job it is (a native manifest has no `type`)."""
    return "type" in doc


def from_azureml(doc: dict, source: str | None = None) -> dict[str, Any]:
    """The native manifest dict for an AzureML distillation job YAML; raises ManifestError (lines prefixed
    with `source` when given) for a written key, a field outside the shape, or a broken AzureML rule."""
    secrets = find_secrets(doc, AZURE_KEY_ADVICE)
    if secrets:
        raise _error(secrets, source)
    leaves, problems = _flatten(doc, "")
    problems += _check(leaves)
    if problems:
        raise _error(problems, source)
    return _native(leaves)


def _error(problems: list[str], source: str | None) -> ManifestError:
    return ManifestError([f"{source}: {p}" if source else p for p in problems])


def azure_path(native: str) -> str:
    """The AzureML path a native field path came from ("inference.top_p" ->
    "teacher_model_settings.inference_parameters.top_p"); native-only paths are returned unchanged."""
    head = native.partition("[")[0]
    for prefix in sorted(_NATIVE_TO_AZURE, key=len, reverse=True):
        if head == prefix or head.startswith(prefix + "."):
            return _NATIVE_TO_AZURE[prefix] + native[len(prefix):]
    return native


def _flatten(node: dict, prefix: str) -> tuple[dict[str, Any], list[str]]:
    """{AzureML path: value} for every known field under `node`, and a problem for every unknown one."""
    leaves: dict[str, Any] = {}
    problems: list[str] = []
    for key, value in node.items():
        path = f"{prefix}{key}"
        if path in FIELD_MAP:
            leaves[path] = value
        elif path in _DATA_SECTIONS and isinstance(value, str):
            leaves[f"{path}.path"] = value  # AzureML's short form: the path alone
        elif path in _SECTIONS and isinstance(value, dict | None):
            more, wrong = _flatten(value or {}, f"{path}.")
            leaves.update(more)
            problems += wrong
        elif path in _SECTIONS:
            problems.append(f"{path}: must be a mapping of fields")
        else:
            problems.append(f"{path}: {_unknown(str(key), prefix)}")
    return leaves, problems


def _unknown(name: str, prefix: str) -> str:
    known = sorted({p[len(prefix):].split(".")[0] for p in (*FIELD_MAP, *_SECTIONS) if p.startswith(prefix)})
    match = difflib.get_close_matches(name, known, n=1)
    hint = f"did you mean `{match[0]}`?" if match else f"expected one of: {', '.join(known)}"
    return f"not a field of an AzureML distillation job; {hint}"


def _check(leaves: dict[str, Any]) -> list[str]:
    """AzureML's rules that the native model cannot see: fixed values, required fields, max_len_summary."""
    problems = [f"{path}: must be `{fixed}`{_FIXED_NOTES.get(path, '')}"
                for path, fixed in FIXED_VALUES.items()
                if path in leaves and str(leaves[path]).lower() != fixed]
    problems += [f"{path}: required" for path in REQUIRED if leaves.get(path) in (None, "")]
    task = _task(leaves)
    if "prompt_settings.max_len_summary" in leaves and task is not None and not task.rules.summary_length:
        problems.append(f"prompt_settings.max_len_summary: only for {tasks_with('summary_length')}")
    return problems


def _task(leaves: dict[str, Any]) -> Task | None:
    value = leaves.get("data_generation_task_type")
    try:
        return Task.parse(value) if isinstance(value, str) else None
    except ValueError:
        return None


def _native(leaves: dict[str, Any]) -> dict[str, Any]:
    """The native dict: each mapped leaf put at its native path; the teacher is an Azure AI endpoint."""
    doc: dict[str, Any] = {}
    for path, value in leaves.items():
        target = FIELD_MAP[path]
        if target:
            _put(doc, target, _hyperparameters(value) if path == "hyperparameters" else value)
    teacher = doc.setdefault("teacher", {})
    if kind_of(str(teacher.get("url", ""))) == "azure_openai":  # an Azure OpenAI deployment as the teacher
        teacher["kind"] = "azure_openai"
        teacher.pop("model", None)  # the connection's name, not a deployment: the URL names the deployment
    else:
        teacher["kind"] = "azure_ai"  # a serverless or online endpoint, whatever its host
    teacher["auth"] = "key" if teacher.get("key_setting") else "entra"
    return doc


def _put(doc: dict[str, Any], path: str, value: Any) -> None:
    *parents, last = path.split(".")
    for part in parents:
        doc = doc.setdefault(part, {})
    doc[last] = value


def _hyperparameters(value: Any) -> Any:
    """AzureML hyperparameters are strings: numbers written bare in YAML are kept as the string they spell."""
    if not isinstance(value, dict):
        return value
    return {str(k): str(v).lower() if isinstance(v, bool) else str(v) if isinstance(v, int | float) else v
            for k, v in value.items()}
