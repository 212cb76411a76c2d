"""The job manifest's schema: one typed, validated description of a distillation job.

Every field has a documented default; `docs/manifest.md` lists them. Secrets never live here: a teacher key is
named by `teacher.key_setting` (an environment variable or app setting), never written. Every problem is reported as
`<file>: <field.path>: <what is wrong>` and never repeats the value that was written. Reading manifest files (native,
or AzureML's distillation YAML) is shared.manifest.load.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from shared.jobs.paths import JOB_ID_PATTERN, JOB_ID_RULE
from shared.manifest.endpoints import kind_of, place
from shared.tasks import Task
from shared.tasks.summarization import DEFAULT_MAX_LEN_SUMMARY

DEFAULT_STUDENT = "SmolLM2-135M-Instruct"  # the packaged local student (shared.local.models)
SAMPLING_TEMPERATURE = 0.7  # the teacher's temperature when it is asked several answers and none is given


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_enum_values=False)


class TeacherKind(StrEnum):
    AZURE_OPENAI = "azure_openai"  # an Azure OpenAI resource; `model` is the deployment name
    # an Azure AI serverless (*.models.ai.azure.com) or online (*.inference.ml.azure.com) endpoint
    AZURE_AI = "azure_ai"
    OPENAI_COMPATIBLE = "openai_compatible"  # any base URL speaking /chat/completions (OpenAI, vLLM, ...)
    LOCAL = "local"  # the teacher server `distill teacher serve` starts on this machine


class TeacherAuth(StrEnum):
    ENTRA = "entra"  # managed identity / Entra ID through DefaultAzureCredential
    KEY = "key"  # a key read at call time from the setting named by `key_setting`
    NONE = "none"  # no credentials (local and test teachers)


_SETTING_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class TeacherSettings(_Strict):
    kind: TeacherKind = Field(TeacherKind.OPENAI_COMPATIBLE, description="default: what the URL's host says "
                              "(azure_openai, azure_ai), else openai_compatible")
    url: str | None = Field(None, description="the endpoint's URL in any form Azure or the provider shows it "
                            "(kept as the request URL it leads to); not needed for the local teacher")
    model: str = Field("teacher", min_length=1, description="model name, or the deployment for Azure OpenAI")
    api_version: str = Field("2024-10-21", description="Azure OpenAI API version")
    auth: TeacherAuth | None = Field(None, description="default: key when key_setting is set, else entra for "
                                     "Azure kinds, else none")
    key_setting: str | None = Field(None, description="NAME of the environment variable / app setting "
                                    "holding the key")
    timeout_seconds: float = Field(180.0, gt=0, le=3600)
    max_retries: int = Field(4, ge=0, le=20)

    @model_validator(mode="before")
    @classmethod
    def _place_url(cls, data: Any) -> Any:
        """The URL as the one base URL its kind needs (shared.manifest.endpoints); the kind, when not given, and an
        Azure OpenAI deployment and API version written in the URL, taken from it."""
        if not isinstance(data, dict) or not isinstance(data.get("url"), str) or data.get("kind") == TeacherKind.LOCAL:
            return data
        kind = str(data.get("kind") or kind_of(data["url"]))
        try:
            placed = place(data["url"], kind)
        except ValueError as err:
            raise ValueError(f"url: {err}") from None
        taken = {"kind": placed.kind, "url": placed.url, "model": placed.deployment,
                 "api_version": placed.api_version}
        for name in ("model", "api_version"):  # a field left at its default yields to the URL
            if taken[name] and data.get(name) not in (None, taken[name], cls.model_fields[name].default):
                raise ValueError(f"url: it names another {name} than the teacher's {name} field; give one of the "
                                 "two, or make them agree")
        return {**data, **{name: value for name, value in taken.items() if value}}

    @field_validator("key_setting")
    @classmethod
    def _check_key_setting(cls, value: str | None) -> str | None:
        if value is not None and not _SETTING_NAME.match(value):
            raise ValueError("must be the NAME of an environment variable or app setting (letters, digits "
                             "and _, not starting with a digit), never the key itself")
        return value

    @model_validator(mode="after")
    def _check(self) -> TeacherSettings:
        if self.kind is not TeacherKind.LOCAL and not self.url:
            raise ValueError("url: required for every teacher kind but local")
        if self.url and not self.url.lower().startswith(("https://", "http://")):
            raise ValueError("url: must be an http:// or https:// URL")
        if self.auth is TeacherAuth.KEY and not self.key_setting:
            raise ValueError("key_setting: required when auth is 'key'; name the setting that holds the key")
        return self

    @property
    def effective_auth(self) -> TeacherAuth:
        if self.auth is not None:
            return self.auth
        if self.key_setting:
            return TeacherAuth.KEY
        if self.kind in (TeacherKind.AZURE_OPENAI, TeacherKind.AZURE_AI):
            return TeacherAuth.ENTRA
        return TeacherAuth.NONE


class InferenceParameters(_Strict):
    temperature: float = Field(0.0, ge=0, le=1)
    top_p: float = Field(1.0, ge=0, le=1)
    max_tokens: int = Field(1024, ge=1, le=32768)
    stop: list[str] | None = Field(None, max_length=4)
    seed: int | None = None
    frequency_penalty: float = Field(0.0, ge=0, le=2)
    presence_penalty: float = Field(0.0, ge=0, le=2)


class PromptSettings(_Strict):
    chain_of_thought: bool = False
    chain_of_density: bool = False
    max_len_summary: int = Field(DEFAULT_MAX_LEN_SUMMARY, ge=5, le=2000)
    keep_reasoning: bool = Field(False, description="train the student on the teacher's reasoning + answer "
                                 "(distilling step by step); needs chain_of_thought")
    samples: int = Field(1, ge=1, le=16, description="answers asked of the teacher per row (self-consistency): the "
                         "majority answer is kept, with the longest reasoning that reaches it; for tasks scored by "
                         "exact match")


class FineTuneMethod(StrEnum):
    FULL = "full"
    LORA = "lora"


class StudentSettings(_Strict):
    model: str = Field(DEFAULT_STUDENT, min_length=1,
                       description="a local model (name or folder) or an AzureML registry id (azureml://...)")
    method: FineTuneMethod = FineTuneMethod.FULL
    hyperparameters: dict[str, str | int | float] = Field(default_factory=dict)
    instance_type: str | None = Field(None, min_length=1, description="AzureML `resources.instance_type`: "
                                      "fine-tune on this managed compute instead of serverless; ignored by a "
                                      "local student")

    @field_validator("hyperparameters", mode="before")
    @classmethod
    def _check_hyperparameters(cls, value: Any) -> Any:
        if isinstance(value, dict) and any(isinstance(v, bool) or not isinstance(v, str | int | float)
                                           for v in value.values()):
            raise ValueError("every value must be a string or a number (a yes/no is written \"true\")")
        return value

    @property
    def backend(self) -> Literal["azureml", "local"]:
        return "azureml" if self.model.startswith("azureml://") else "local"

    @property
    def takes_system_prompt(self) -> bool:
        """Phi-3-medium models take no system prompt: its text is folded into the user turn."""
        return "phi-3-medium" not in self.model.lower()


MAX_CONCURRENCY = 100  # teacher requests in flight per worker, at most


class Limits(_Strict):
    requests_per_minute: int | None = Field(None, gt=0)
    tokens_per_minute: int | None = Field(None, gt=0)
    concurrency: int = Field(10, gt=0, le=MAX_CONCURRENCY, description="teacher requests in flight per worker "
                             "(the managed service's request_batch_size)")
    budget_tokens: int | None = Field(None, gt=0, description="stop teacher calls once this many tokens are "
                                      "used")
    max_rows: int = Field(1_000_000, gt=0, description="rows per file above which a file is refused")


class BatchSettings(_Strict):
    enabled: bool = Field(False, description="send the teacher requests through the provider's Batch API (files "
                          "+ batches, half price on Azure OpenAI / OpenAI) instead of one call at a time")
    poll_seconds: float = Field(60.0, gt=0, le=3600, description="how often a pending batch is looked at")
    completion_window: str = Field("24h", description="the Batch API's completion_window")
    max_rounds: int = Field(3, ge=1, le=10, description="batches per shard: requests a batch did not answer go "
                            "into the next one; after the last, their rows are rejected with the batch's error")


class EvaluationSettings(_Strict):
    """How the evaluation step reaches the students once the fine-tune is done (shared.pipeline.evaluate)."""

    deploy: Literal["serverless", "none"] | None = Field(
        None, description="serverless: deploy the fine-tuned model for the evaluation (in Azure a serverless endpoint, "
        "locally a model server on this machine) and remove it afterwards; none: no evaluation. Default: serverless, "
        "or the endpoint when one is given, or none for a student fine-tuned on managed compute "
        "(student.instance_type)")
    endpoint: str | None = Field(None, description="the URL of a deployment of the fine-tuned model you made yourself")
    key_setting: str | None = Field(None, description="NAME of the setting holding the endpoint's key")
    model: str | None = Field(None, min_length=1, description="the model name sent to `endpoint` (default: the "
                              "fine-tuned model's name)")
    keep_endpoint: bool = Field(False, description="keep the serverless deployment after the evaluation")
    base_endpoint: str | None = Field(None, description="the URL of the base student, to score it too")
    base_key_setting: str | None = Field(None, description="NAME of the setting holding the base endpoint's key")
    max_rows: int = Field(200, ge=1, le=100_000, description="validation rows scored (the first ones), for every "
                          "model alike: a cap, not a limit that refuses")
    deploy_timeout_minutes: float = Field(60.0, gt=0, le=24 * 60, description="how long a deployment may take "
                                          "to become ready before the evaluation ends with that reason")
    timeout_seconds: float = Field(180.0, gt=0, le=3600, description="the longest a student's answer may take")
    max_retries: int = Field(4, ge=0, le=20, description="retries of a student's failed call")

    @field_validator("key_setting", "base_key_setting")
    @classmethod
    def _check_setting(cls, value: str | None) -> str | None:
        return TeacherSettings._check_key_setting(value)

    @model_validator(mode="after")
    def _check(self) -> EvaluationSettings:
        for name in ("endpoint", "base_endpoint"):
            url = getattr(self, name)
            if url is not None and not url.lower().startswith(("https://", "http://")):
                raise ValueError(f"{name}: must be an http:// or https:// URL")
            if url is not None:
                try:
                    place(url, kind_of(url))
                except ValueError as err:
                    raise ValueError(f"{name}: {err}") from None
        if self.endpoint and self.deploy:
            raise ValueError(f"deploy: `{self.deploy}` and an endpoint are two ways to reach the student; give one")
        if self.key_setting and not self.endpoint:
            raise ValueError("key_setting: belongs to endpoint, which is not given")
        if self.base_key_setting and not self.base_endpoint:
            raise ValueError("base_key_setting: belongs to base_endpoint, which is not given")
        return self


def tasks_with_metric(metric: str = "accuracy") -> str:
    """The tasks scored by `metric`, for an error message: "NLI, NLU_QA, MATH"."""
    return ", ".join(t.value for t in Task if t.rules.metric == metric)


def tasks_with(rule: str) -> str:
    """The tasks whose rules allow `rule` (a TaskRules flag), for an error message: "SUMMARIZATION"."""
    return ", ".join(t.value for t in Task if getattr(t.rules, rule))


class Manifest(_Strict):
    task: Task
    training_file: Path
    validation_file: Path | None = None
    validation_fraction: float = Field(0.1, gt=0, lt=1, description="share of training rows held out "
                                       "(by row id, deterministically) when no validation file is given")
    teacher: TeacherSettings = Field(default_factory=lambda: TeacherSettings(kind=TeacherKind.LOCAL))
    inference: InferenceParameters = Field(default_factory=InferenceParameters)
    prompt: PromptSettings = Field(default_factory=PromptSettings)
    student: StudentSettings = Field(default_factory=StudentSettings)
    finetune: bool = Field(True, description="false stops the job when the dataset is assembled "
                           "(state `dataset ready`), as `distill run --no-finetune` does")
    min_success_ratio: float = Field(0.7, ge=0, le=1)
    min_agreement: float | None = Field(None, gt=0, le=1, description="with prompt.samples above 1: the share of the "
                                        "samples that must give the kept answer, else the row is rejected "
                                        "(`no_majority`); default: more than half")
    drop_disagreeing: bool = Field(False, description="reject a teacher answer that disagrees with the row's "
                                   "reference answer (`disagrees_with_reference`)")
    min_rows: int | None = Field(None, ge=1, description="default: 65, or 40 for MATH")
    limits: Limits = Field(default_factory=Limits)
    cache: bool = Field(True, description="answer repeated teacher requests from the response cache; false (as "
                        "`distill run --no-cache` does) calls the teacher for every request and keeps nothing")
    batch: BatchSettings = Field(default_factory=BatchSettings)
    evaluation: EvaluationSettings = Field(default_factory=EvaluationSettings)
    name: Annotated[str, Field(pattern=JOB_ID_PATTERN)] | None = Field(None, description=JOB_ID_RULE)
    experiment_name: str = Field("distill", min_length=1, max_length=255)
    display_name: str | None = Field(None, min_length=1, description="AzureML job display name")
    description: str | None = Field(None, description="free text, kept with the job")
    tags: dict[str, str] = Field(default_factory=dict, description="AzureML job tags")
    output_model_name: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _sampling_temperature(cls, data: Any) -> Any:
        """Sampling needs a temperature above 0: with prompt.samples above 1 and no inference.temperature given,
        SAMPLING_TEMPERATURE is used."""
        if not isinstance(data, dict) or not isinstance(data.get("prompt"), dict | PromptSettings):
            return data
        prompt = data["prompt"]
        samples = prompt.samples if isinstance(prompt, PromptSettings) else prompt.get("samples", 1)
        inference = data.get("inference")
        if not isinstance(samples, int) or samples <= 1 or isinstance(inference, InferenceParameters):
            return data
        inference = inference if isinstance(inference, dict) else {}
        if "temperature" in inference:
            return data
        return {**data, "inference": {**inference, "temperature": SAMPLING_TEMPERATURE}}

    @field_validator("task", mode="before")
    @classmethod
    def _parse_task(cls, value: Any) -> Any:
        """Any casing and `-` for `_`, as AzureML accepts ("nlu-qa", "Math")."""
        if not isinstance(value, str) or isinstance(value, Task):
            return value
        try:
            return Task.parse(value)
        except ValueError:
            known = ", ".join(t.value for t in Task)
            raise ValueError(f"not a known task (expected one of {known})") from None

    @model_validator(mode="after")
    def _check(self) -> Manifest:
        p, task, rules = self.prompt, self.task.value, self.task.rules
        if p.chain_of_thought and not rules.chain_of_thought:
            raise ValueError(f"prompt.chain_of_thought: not available for {task} (only for "
                             f"{tasks_with('chain_of_thought')})")
        if p.chain_of_density and not rules.chain_of_density:
            raise ValueError(f"prompt.chain_of_density: only for {tasks_with('chain_of_density')}, not {task}")
        if p.max_len_summary != DEFAULT_MAX_LEN_SUMMARY and not rules.summary_length:
            raise ValueError(f"prompt.max_len_summary: only for {tasks_with('summary_length')}, not {task}")
        if p.keep_reasoning and not p.chain_of_thought:
            raise ValueError("prompt.keep_reasoning: needs prompt.chain_of_thought")
        if self.evaluation.deploy == "serverless" and self.student.instance_type:
            raise ValueError("evaluation.deploy: a model fine-tuned on managed compute (student.instance_type) "
                             "cannot be deployed serverless; deploy it yourself and give evaluation.endpoint")
        if p.samples > 1 and rules.metric != "accuracy":
            raise ValueError(f"prompt.samples: a majority needs answers that can be compared, as {tasks_with_metric()} "
                             f"give; {task} does not")
        if p.samples > 1 and self.inference.temperature == 0:
            raise ValueError("inference.temperature: 0 gives the same answer every time; sampling several "
                             "(prompt.samples) needs a temperature above 0, or leave it out for "
                             f"{SAMPLING_TEMPERATURE}")
        if self.min_agreement is not None and p.samples == 1:
            raise ValueError("min_agreement: needs prompt.samples above 1")
        if self.drop_disagreeing and rules.metric != "accuracy":
            raise ValueError(f"drop_disagreeing: only for answers that can be compared ({tasks_with_metric()}), "
                             f"not {task}")
        if self.batch.enabled and p.samples > 1:
            raise ValueError("batch.enabled: not with prompt.samples above 1")
        if self.batch.enabled and not self.cache:
            raise ValueError("batch.enabled: needs the response cache (batch replies are delivered through it)")
        return self

    @property
    def files(self) -> dict[str, Path]:
        """The data files by split: "train", and "validation" when one is given."""
        files = {"train": self.training_file}
        if self.validation_file is not None:
            files["validation"] = self.validation_file
        return files

    @property
    def student_access(self) -> Literal["serverless", "endpoint", "none"]:
        """How the evaluation reaches the fine-tuned student (EvaluationSettings.deploy's default worked out)."""
        evaluation = self.evaluation
        if evaluation.endpoint:
            return "endpoint"
        if evaluation.deploy:
            return evaluation.deploy
        return "none" if self.student.instance_type and self.student.backend == "azureml" else "serverless"

    @property
    def effective_min_rows(self) -> int:
        return self.min_rows if self.min_rows is not None else self.task.rules.min_rows

    def with_overrides(self, **changes: Any) -> Manifest:
        """A copy with fields replaced, validated again (for command-line flags); raises ManifestError."""
        return validate_manifest({**self.model_dump(), **changes}, source="overrides")




class ManifestError(ValueError):
    """Everything wrong with a manifest, one `<file>: <field.path>: <problem>` line each; never a value."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))

    def __str__(self) -> str:
        return "\n".join(self.problems)


Loc = tuple[str | int, ...]
Rename = Callable[[str], str]


def dotted(loc: Loc) -> str:
    """("inference", "stop", 0) -> "inference.stop[0]"."""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else f".{part}" if text else str(part)
    return text


def located(source: str | None, path: str, message: str) -> str:
    return ": ".join(part for part in (source, path, message) if part)


def same_path(path: str) -> str:
    return path




def validate_manifest(doc: dict, source: str = "manifest", rename: Rename = same_path) -> Manifest:
    """Manifest.model_validate, raising ManifestError instead of pydantic's ValidationError."""
    manifest, problems = validated(doc, rename)
    if manifest is None:
        raise ManifestError([located(source, path, msg) for path, msg in problems])
    return manifest


def validated(doc: dict, rename: Rename) -> tuple[Manifest | None, list[tuple[str, str]]]:
    """The manifest, or None and its (field path, problem) pairs: pydantic's errors rewritten from `loc` and
    `msg` alone (its own text repeats the input), each path renamed by `rename` to the path the user wrote."""
    try:
        return Manifest.model_validate(doc), []
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False, include_context=False)
    return None, [_describe(e["loc"], e["msg"], e["type"], rename) for e in errors]


_PLAIN = {"missing": "required", "path_type": "must be a file path"}


def _describe(loc: Loc, msg: str, kind: str, rename: Rename) -> tuple[str, str]:
    """(field path, problem) for one pydantic error."""
    if kind == "extra_forbidden":
        return rename(dotted(loc)), _unknown_field(str(loc[-1]), _fields_at(Manifest, loc[:-1]))
    if kind in ("value_error", "assertion_error"):
        loc, msg = _split_path(loc, re.sub(r"^(Value error|Assertion failed), ", "", msg))
    if kind == "string_pattern_mismatch" and loc == ("name",):
        return rename("name"), f"{JOB_ID_RULE}; this one is not"
    return rename(dotted(loc)), _PLAIN.get(kind) or re.sub(r"^\w+ should ", "must ", msg)


def _split_path(loc: Loc, msg: str) -> tuple[Loc, str]:
    """A validator's message may start with the field it is about ("url: required ..."): move that to loc."""
    match = re.match(r"([A-Za-z_][\w.]*): (.+)", msg, re.DOTALL)
    if not match or match[1].split(".")[0] not in _fields_at(Manifest, loc):
        return loc, msg
    return (*loc, *match[1].split(".")), match[2]


def _fields_at(model: type[BaseModel], loc: Loc) -> list[str]:
    """The field names of the model found at `loc` below `model` ([] when `loc` is not a model)."""
    for part in loc:
        field = model.model_fields.get(part) if isinstance(part, str) else None
        annotation = field.annotation if field else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        model = annotation
    return list(model.model_fields)


def _unknown_field(name: str, known: list[str]) -> str:
    match = difflib.get_close_matches(name, known, n=1)
    if match:
        return f"unknown field; did you mean `{match[0]}`?"
    return f"unknown field (expected one of: {', '.join(known)})" if known else "unknown field"
