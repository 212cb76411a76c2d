"""AzureMLFineTuner against a fake MLClient that returns real azure-ai-ml entities (no network).

The job is checked on the SDK entity itself, and on the REST body the SDK would send.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from azure.core.exceptions import ResourceNotFoundError

from shared.finetune.azureml import AzureMLFineTuner
from shared.ports import Blob, FineTuneRequest

STUDENT = "azureml://registries/azureml/models/Phi-3.5-mini-instruct/versions/6"
TRAIN = b'{"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]}\n'
VALIDATION = b'{"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "v"}]}\n'


class MemoryStore:
    """The part of BlobStore the AzureML fine-tuner uses."""

    def __init__(self, blobs: dict[str, bytes]) -> None:
        self.blobs = dict(blobs)

    def read(self, path: str) -> Blob | None:
        return Blob(self.blobs[path], "etag") if path in self.blobs else None

    def download_to(self, path: str, dest: Path) -> bool:
        if path not in self.blobs:
            return False
        dest.write_bytes(self.blobs[path])
        return True

    def list(self, prefix: str) -> Iterator[str]:
        return iter(sorted(p for p in self.blobs if p.startswith(prefix)))


@pytest.fixture(autouse=True)
def sdk() -> None:
    """Each test skips (a failure under CI=true) when azure-ai-ml is missing."""
    pytest.importorskip("azure.ai.ml", reason="azure-ai-ml is not installed: pip install azure-ai-ml")


@dataclass
class FakeData:
    registered: list[tuple[Any, bytes]] = field(default_factory=list)

    def create_or_update(self, data: Any) -> Any:
        from azure.ai.ml.entities import Data

        content = Path(data.path).read_bytes()  # the temp file is gone once start() returns
        self.registered.append((data, content))
        return Data(type=data.type, path=f"azureml://datastores/workspaceblobstore/paths/LocalUpload/{data.name}",
                    name=data.name, version=data.version, id=f"azureml:{data.name}:{data.version}")


@dataclass
class FakeJobs:
    submitted: list[Any] = field(default_factory=list)
    service: dict[str, Any] = field(default_factory=dict)  # what AzureML would return from jobs.get

    def get(self, name: str) -> Any:
        if name not in self.service:
            raise ResourceNotFoundError(f"job {name} not found")
        return self.service[name]

    def create_or_update(self, job: Any) -> Any:
        self.submitted.append(job)
        self.service[job.name] = fetched(job, "NotStarted")
        return self.service[job.name]


@dataclass
class FakeSubscriptions:
    """`ml_client.marketplace_subscriptions`: what exists, what was created, and an HTTP status to refuse with."""

    existing: dict[str, Any] = field(default_factory=dict)
    created: list[Any] = field(default_factory=list)
    refuse: int | None = None

    def get(self, name: str) -> Any:
        if name not in self.existing:
            raise ResourceNotFoundError(f"subscription {name} not found")
        return self.existing[name]

    def begin_create_or_update(self, subscription: Any) -> Any:
        from azure.core.exceptions import HttpResponseError

        if self.refuse:
            error = HttpResponseError(message="forbidden")
            error.status_code = self.refuse
            raise error
        subscription._to_rest_object()  # the body the SDK would send
        self.created.append(subscription)
        self.existing[subscription.name] = subscription
        return type("Done", (), {"result": lambda _: subscription})()


@dataclass
class FakeMLClient:
    data: FakeData = field(default_factory=FakeData)
    jobs: FakeJobs = field(default_factory=FakeJobs)
    marketplace_subscriptions: FakeSubscriptions = field(default_factory=FakeSubscriptions)


def fetched(job: Any, status: str) -> Any:
    """The entity `ml_client.jobs.get` builds from the service's answer (a REST round trip, status set)."""
    from azure.ai.ml.entities import Job

    rest = job._to_rest_object()
    rest.properties.status = status
    return Job._from_rest_object(rest)


def request(**changes: Any) -> FineTuneRequest:
    values: dict[str, Any] = {
        "name": "distill-nli-1a2b3c4d5e6f-ft",
        "job_id": "nli-1a2b3c4d5e6f",
        "student_model": STUDENT,
        "train_path": "jobs/nli-1a2b3c4d5e6f/train.jsonl",
        "validation_path": "jobs/nli-1a2b3c4d5e6f/validation.jsonl",
        "experiment_name": "distill",
        "hyperparameters": {"n_epochs": 3, "learning_rate_multiplier": 0.5, "batch_size": "8"},
        "output_model_name": "phi35-nli",
        "tags": {"distill_task": "NLI"},
    }
    return FineTuneRequest(**{**values, **changes})


@pytest.fixture
def client() -> FakeMLClient:
    return FakeMLClient()


@pytest.fixture
def tuner(client: FakeMLClient) -> AzureMLFineTuner:
    store = MemoryStore({"jobs/nli-1a2b3c4d5e6f/train.jsonl": TRAIN,
                         "jobs/nli-1a2b3c4d5e6f/validation.jsonl": VALIDATION})
    return AzureMLFineTuner(client, store)


def test_start_registers_both_files_as_data_assets(tuner: AzureMLFineTuner, client: FakeMLClient) -> None:
    tuner.start(request())

    assets = {data.name: (data, content) for data, content in client.data.registered}
    assert set(assets) == {"distill-nli-1a2b3c4d5e6f-ft-train", "distill-nli-1a2b3c4d5e6f-ft-validation"}
    train, train_content = assets["distill-nli-1a2b3c4d5e6f-ft-train"]
    assert (train.type, train.version, train_content) == ("uri_file", "1", TRAIN)
    assert assets["distill-nli-1a2b3c4d5e6f-ft-validation"][1] == VALIDATION


def test_the_submitted_job_is_the_fine_tuning_job_asked_for(tuner: AzureMLFineTuner, client: FakeMLClient) -> None:
    assert tuner.start(request()) == "distill-nli-1a2b3c4d5e6f-ft"

    [job] = client.jobs.submitted
    assert type(job).__name__ == "CustomModelFineTuningJob"
    assert job.name == "distill-nli-1a2b3c4d5e6f-ft"
    assert job.experiment_name == "distill"
    assert job.task == "chatCompletion"  # the SDK stores ChatCompletion with a lower-case first letter
    assert (job.model.type, job.model.path) == ("mlflow_model", STUDENT)
    assert job.training_data.type == "uri_file"
    assert job.training_data.path == "azureml:distill-nli-1a2b3c4d5e6f-ft-train:1"
    assert job.validation_data.path == "azureml:distill-nli-1a2b3c4d5e6f-ft-validation:1"
    assert job.hyperparameters == {"n_epochs": "3", "learning_rate_multiplier": "0.5", "batch_size": "8"}
    assert job.tags == {"distill_task": "NLI", "distill_job": "nli-1a2b3c4d5e6f"}
    assert not job.properties
    assert job.outputs["registered_model"].name == "phi35-nli"


def test_the_request_body_carries_validation_data_and_nothing_secret(tuner: AzureMLFineTuner,
                                                                      client: FakeMLClient) -> None:
    tuner.start(request())

    body = client.jobs.submitted[0]._to_rest_object().as_dict()["properties"]
    assert body["fineTuningDetails"]["validationData"]["uri"] == "azureml:distill-nli-1a2b3c4d5e6f-ft-validation:1"
    assert body["fineTuningDetails"]["hyperParameters"]["n_epochs"] == "3"
    assert body["tags"] == {"distill_task": "NLI", "distill_job": "nli-1a2b3c4d5e6f"}
    assert not body.get("properties")


def test_a_request_tag_cannot_take_over_distill_job(tuner: AzureMLFineTuner, client: FakeMLClient) -> None:
    tuner.start(request(tags={"distill_job": "someone-else"}))

    assert client.jobs.submitted[0].tags == {"distill_job": "nli-1a2b3c4d5e6f"}


def test_the_output_model_name_defaults_to_the_run_name(tuner: AzureMLFineTuner) -> None:
    job = tuner.build_job(request(output_model_name=None), "azureml:t:1", "azureml:v:1")

    assert job.outputs["registered_model"].name == "distill-nli-1a2b3c4d5e6f-ft"


def test_a_second_start_submits_nothing(tuner: AzureMLFineTuner, client: FakeMLClient) -> None:
    first = tuner.start(request())
    second = tuner.start(request())

    assert first == second == "distill-nli-1a2b3c4d5e6f-ft"
    assert len(client.jobs.submitted) == 1
    assert len(client.data.registered) == 2


def test_a_missing_blob_submits_nothing(client: FakeMLClient) -> None:
    tuner = AzureMLFineTuner(client, MemoryStore({"jobs/nli-1a2b3c4d5e6f/train.jsonl": TRAIN}))

    with pytest.raises(FileNotFoundError, match=r"validation\.jsonl"):
        tuner.start(request())
    assert client.jobs.submitted == []


@pytest.mark.parametrize(("status", "model", "error"), [
    ("Running", None, None),
    ("Completed", "phi35-nli", None),
    ("Failed", None, "the AzureML job ended Failed; its logs are in AzureML studio"),
    ("Canceled", None, "the AzureML job ended Canceled; its logs are in AzureML studio"),
])
def test_state_maps_the_fetched_job(tuner: AzureMLFineTuner, client: FakeMLClient, status: str, model: str | None,
                                    error: str | None) -> None:
    tuner.start(request())
    client.jobs.service["distill-nli-1a2b3c4d5e6f-ft"] = fetched(client.jobs.submitted[0], status)

    state = tuner.state("distill-nli-1a2b3c4d5e6f-ft")

    assert (state.name, state.status, state.output_model, state.error) == (
        "distill-nli-1a2b3c4d5e6f-ft", status, model, error)
    assert type(state.status) is str  # the SDK's status is an enum; RunState holds the plain AzureML string


def test_state_of_an_unknown_run_raises_lookup_error(tuner: AzureMLFineTuner) -> None:
    with pytest.raises(LookupError, match="no AzureML job named nope"):
        tuner.state("nope")


def test_importing_the_module_does_not_import_azure_ai_ml() -> None:
    code = "import sys, shared.finetune.azureml; print(sorted(m for m in sys.modules if m.startswith('azure')))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


LIVE = ("DISTILL_LIVE_AZUREML_SUBSCRIPTION", "DISTILL_LIVE_AZUREML_RESOURCE_GROUP", "DISTILL_LIVE_AZUREML_WORKSPACE")


@pytest.mark.live
def test_live_workspace_lists_jobs() -> None:
    missing = [name for name in LIVE if not os.environ.get(name)]
    if missing:
        pytest.skip(f"live: set {', '.join(missing)} to reach a real AzureML workspace")
    subscription, group, workspace = (os.environ[name] for name in LIVE)
    tuner = AzureMLFineTuner.from_settings(subscription, group, workspace, store=MemoryStore({}))

    jobs = list(itertools.islice(tuner.ml_client.jobs.list(), 5))

    assert all(job.name for job in jobs)


def test_display_name_description_tags_and_managed_compute_reach_the_job_entity(tuner: AzureMLFineTuner,
                                                                                client: FakeMLClient) -> None:
    tuner.start(request(display_name="NLI, 405B to 8B", description="teacher labels", tags={"team": "research"},
                        instance_type="Standard_NC24ads_A100_v4"))
    job = client.jobs.submitted[0]
    body = job._to_rest_object().as_dict()["properties"]
    assert body["displayName"] == "NLI, 405B to 8B" and body["description"] == "teacher labels"
    assert body["tags"] == {"team": "research", "distill_job": "nli-1a2b3c4d5e6f"}
    assert job.resources.instance_types == ["Standard_NC24ads_A100_v4"]
    serverless = tuner.build_job(request(), "azureml:t:1", "azureml:v:1")
    assert serverless.resources is None and serverless.display_name is None


LLAMA = "azureml://registries/azureml-meta/models/Meta-Llama-3.1-8B-Instruct/versions/2"


def test_a_partners_student_gets_its_marketplace_subscription_once(tuner: AzureMLFineTuner,
                                                                  client: FakeMLClient) -> None:
    tuner.start(request(student_model=LLAMA))
    tuner.start(request(student_model=LLAMA, name="distill-nli-other-ft"))
    [subscription] = client.marketplace_subscriptions.created
    assert subscription.model_id == "azureml://registries/azureml-meta/models/Meta-Llama-3.1-8B-Instruct"
    assert subscription.name == "meta-llama-3-1-8b-instruct" and len(client.jobs.submitted) == 2
    tuner.start(request(name="phi-ft"))  # Microsoft's own model: no subscription
    assert len(client.marketplace_subscriptions.created) == 1


def test_a_subscription_the_app_may_not_create_refuses_the_fine_tune_with_the_command(
        tuner: AzureMLFineTuner, client: FakeMLClient) -> None:
    from shared.ports import FineTuneRefused

    client.marketplace_subscriptions.refuse = 403
    with pytest.raises(FineTuneRefused, match=r"az ml marketplace-subscription create .*meta-llama-3-1-8b-instruct"):
        tuner.start(request(student_model=LLAMA))
    assert client.jobs.submitted == []
