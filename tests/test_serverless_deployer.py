"""ServerlessDeployer against a fake MLClient that returns real azure-ai-ml entities (no network).

The endpoints the fake service holds are built the way `serverless_endpoints.get` builds them: the SDK's entity from
the REST body the service answers with.
"""

from __future__ import annotations

import logging
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

from shared.finetune.serverless import ServerlessDeployer, endpoint_name, same_model

ROOT = Path(__file__).resolve().parents[1]
KEY = "sk-serverless-primary-0123456789"
LOCATION = "eastus2"
WORKSPACE_ID = "6f2c1a0e-0000-4000-8000-1234567890ab"
JOB = "nli-1a2b3c4d5e6f"
REGISTRY = "azureml://registries/azureml/models/Phi-3.5-mini-instruct"
# AzureML's rule for endpoint names: 3 to 32 characters, letters, digits and single hyphens, a letter first, no hyphen
# last (here lower case too: the name is a DNS label of the endpoint's URL).
VALID_NAME = re.compile(r"^[a-z](?:[a-z0-9]|-(?=[a-z0-9])){2,31}$")


@pytest.fixture(autouse=True)
def sdk() -> None:
    """Each test skips (a failure under CI=true) when azure-ai-ml is missing."""
    pytest.importorskip("azure.ai.ml", reason="azure-ai-ml is not installed: pip install azure-ai-ml")


def refused(status: int, message: str = "refused") -> HttpResponseError:
    error = HttpResponseError(message=message)
    error.status_code = status
    return error


def served(name: str, model_id: str, state: str, uri: str | None = None) -> Any:
    """The SDK's entity for an endpoint as the service describes it (what `serverless_endpoints.get` returns)."""
    from azure.ai.ml._restclient.arm_ml_service.models import ServerlessEndpoint as RestServerlessEndpoint
    from azure.ai.ml.entities import ServerlessEndpoint

    properties: dict[str, Any] = {"authMode": "Key", "modelSettings": {"modelId": model_id},
                                  "provisioningState": state}
    if uri:
        properties["inferenceEndpoint"] = {"uri": uri}
    arm_id = ("/subscriptions/s/resourceGroups/rg/providers/Microsoft.MachineLearningServices/workspaces/ws/"
              f"serverlessEndpoints/{name}")
    rest = RestServerlessEndpoint({"name": name, "id": arm_id, "location": LOCATION, "properties": properties,
                                   "sku": {"name": "Consumption"}})
    return ServerlessEndpoint._from_rest_object(rest)


@dataclass
class Poller:
    """What `begin_*` returns; the deployer must never wait on it."""

    log: list[str]

    def result(self, timeout: float | None = None) -> None:
        self.log.append("waited")

    def wait(self, timeout: float | None = None) -> None:
        self.log.append("waited")


@dataclass
class FakeEndpoints:
    """`ml_client.serverless_endpoints`: what the service holds, what was asked of it, and a status to refuse with."""

    service: dict[str, Any] = field(default_factory=dict)
    created: list[Any] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    waits: list[str] = field(default_factory=list)
    refuse: int | None = None

    def get(self, name: str) -> Any:
        if self.refuse in (401, 403):
            raise refused(self.refuse, "AuthorizationFailed: no serverlessEndpoints/read")
        if name not in self.service:
            raise ResourceNotFoundError(f"serverless endpoint {name} not found")
        return self.service[name]

    def begin_create_or_update(self, endpoint: Any) -> Poller:
        if self.refuse:
            raise refused(self.refuse, "(UserError) This model cannot be deployed as a serverless endpoint.\nCode: x")
        endpoint._to_rest_object()  # the body the SDK would send
        self.created.append(endpoint)
        self.service[endpoint.name] = served(endpoint.name, endpoint.model_id, "Creating")
        return Poller(self.waits)

    def get_keys(self, name: str) -> Any:
        from azure.ai.ml.entities import EndpointAuthKeys

        return EndpointAuthKeys(primary_key=KEY, secondary_key="sk-secondary")

    def begin_delete(self, name: str) -> Poller:
        if name not in self.service:
            raise ResourceNotFoundError(f"serverless endpoint {name} not found")
        del self.service[name]
        self.deleted.append(name)
        return Poller(self.waits)


@dataclass
class FakeModels:
    """`ml_client.models` of the workspace: registered model name -> latest version."""

    latest: dict[str, str] = field(default_factory=lambda: {"phi35-nli": "3"})

    def get(self, name: str, version: str | None = None, label: str | None = None) -> Any:
        from azure.ai.ml.entities import Model
        from azure.ai.ml.exceptions import ErrorTarget, ValidationErrorType, ValidationException

        assert label == "latest" and version is None
        if name not in self.latest:  # what the SDK raises when the label finds no version
            message = f"Asset {name} does not exist in workspace ws."
            raise ValidationException(message=message, no_personal_data_message=message, target=ErrorTarget.ASSET,
                                      error_type=ValidationErrorType.RESOURCE_NOT_FOUND)
        return Model(name=name, version=self.latest[name])


@dataclass
class FakeWorkspaces:
    asked: list[str] = field(default_factory=list)

    def get(self, name: str) -> Any:
        from azure.ai.ml.entities import Workspace

        self.asked.append(name)
        return Workspace(name=name, location=LOCATION, workspace_id=WORKSPACE_ID)


@dataclass
class FakeMLClient:
    subscription_id: str = "00000000-0000-0000-0000-000000000000"
    resource_group_name: str = "rg"
    workspace_name: str = "ws"
    serverless_endpoints: FakeEndpoints = field(default_factory=FakeEndpoints)
    models: FakeModels = field(default_factory=FakeModels)
    workspaces: FakeWorkspaces = field(default_factory=FakeWorkspaces)


@pytest.fixture
def client() -> FakeMLClient:
    return FakeMLClient()


@pytest.fixture
def deployer(client: FakeMLClient) -> ServerlessDeployer:
    return ServerlessDeployer(client)  # type: ignore[arg-type]


def ready(client: FakeMLClient, deployer: ServerlessDeployer, model_id: str, role: str = "distilled") -> str:
    name = deployer.endpoint_name(JOB, role)
    client.serverless_endpoints.service[name] = served(name, model_id, "Succeeded",
                                                       f"https://{name}.{LOCATION}.models.ai.azure.com")
    return name


WORKSPACE_MODEL = f"azureml://locations/{LOCATION}/workspaces/{WORKSPACE_ID}/models/phi35-nli/versions/3"


# ---- deploy ------------------------------------------------------------------------------------------------------

def test_a_registered_model_is_deployed_by_its_latest_versions_workspace_id(deployer: ServerlessDeployer,
                                                                          client: FakeMLClient) -> None:
    from azure.ai.ml.entities import ServerlessEndpoint

    deployment = deployer.deploy(JOB, "distilled", "phi35-nli")

    [endpoint] = client.serverless_endpoints.created
    assert type(endpoint) is ServerlessEndpoint
    assert endpoint.name == deployer.endpoint_name(JOB, "distilled") == deployment.name
    assert endpoint.model_id == WORKSPACE_MODEL
    assert endpoint.location == LOCATION  # the SDK need not look the workspace up again
    body = endpoint._to_rest_object().as_dict()
    assert body["properties"]["modelSettings"] == {"modelId": WORKSPACE_MODEL}
    assert body["sku"] == {"name": "Consumption"}
    assert (deployment.state, deployment.url, deployment.key, deployment.kind) == ("creating", None, None, "azure_ai")
    assert client.workspaces.asked == ["ws"]


def test_creation_is_started_and_not_waited_on(deployer: ServerlessDeployer, client: FakeMLClient) -> None:
    deployer.deploy(JOB, "distilled", "phi35-nli")
    assert client.serverless_endpoints.waits == []


def test_a_registry_model_is_deployed_without_its_version(deployer: ServerlessDeployer, client: FakeMLClient) -> None:
    deployer.deploy(JOB, "base", f"{REGISTRY}/versions/6")
    deployer.deploy("other", "distilled", WORKSPACE_MODEL)

    assert [e.model_id for e in client.serverless_endpoints.created] == [REGISTRY, WORKSPACE_MODEL]


def test_looking_again_at_a_creating_endpoint_creates_nothing(deployer: ServerlessDeployer,
                                                               client: FakeMLClient) -> None:
    first = deployer.deploy(JOB, "distilled", "phi35-nli")
    again = deployer.deploy(JOB, "distilled", "phi35-nli")

    assert (first.state, again.state) == ("creating", "creating") and first.name == again.name
    assert len(client.serverless_endpoints.created) == 1
    assert client.workspaces.asked == ["ws"]  # the look itself asks only for the endpoint


def test_a_ready_endpoint_gives_its_base_url_and_key(deployer: ServerlessDeployer, client: FakeMLClient,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    name = ready(client, deployer, WORKSPACE_MODEL)

    deployment = deployer.deploy(JOB, "distilled", "phi35-nli")
    deployer.delete(JOB, "distilled")

    assert (deployment.state, deployment.name, deployment.kind) == ("ready", name, "azure_ai")
    assert deployment.url == f"https://{name}.{LOCATION}.models.ai.azure.com/v1"  # the openai client's base URL
    assert deployment.key == KEY
    assert KEY not in repr(deployment)
    assert caplog.records and all(KEY not in record.getMessage() for record in caplog.records)
    assert client.serverless_endpoints.created == []


def test_a_registry_endpoint_is_the_same_model_whatever_the_version(deployer: ServerlessDeployer,
                                                                   client: FakeMLClient) -> None:
    ready(client, deployer, f"{REGISTRY}/versions/7", role="base")
    assert deployer.deploy(JOB, "base", f"{REGISTRY}/versions/6").state == "ready"


@pytest.mark.parametrize("state", ["Failed", "Canceled"])
def test_failed_provisioning_is_failed_with_the_reason(deployer: ServerlessDeployer, client: FakeMLClient,
                                                       state: str) -> None:
    name = deployer.endpoint_name(JOB, "distilled")
    client.serverless_endpoints.service[name] = served(name, WORKSPACE_MODEL, state)

    deployment = deployer.deploy(JOB, "distilled", "phi35-nli")

    assert deployment.state == "failed" and deployment.key is None
    assert name in deployment.error and state.lower() in deployment.error and "phi35-nli" in deployment.error


@pytest.mark.parametrize("state", ["Updating", "Deleting"])
def test_an_endpoint_on_its_way_is_waited_for(deployer: ServerlessDeployer, client: FakeMLClient, state: str) -> None:
    name = deployer.endpoint_name(JOB, "distilled")
    client.serverless_endpoints.service[name] = served(name, WORKSPACE_MODEL, state)
    assert deployer.deploy(JOB, "distilled", "phi35-nli").state == "creating"


def test_an_endpoint_for_another_model_is_failed(deployer: ServerlessDeployer, client: FakeMLClient) -> None:
    name = ready(client, deployer, WORKSPACE_MODEL.replace("phi35-nli", "someone-else"))

    deployment = deployer.deploy(JOB, "distilled", "phi35-nli")

    assert deployment.state == "failed" and deployment.key is None and deployment.url is None
    assert f"{name} exists for another model" in deployment.error and "someone-else" in deployment.error
    assert client.serverless_endpoints.created == []


@pytest.mark.parametrize("status", [401, 403])
def test_a_forbidden_call_names_the_role_the_app_needs(deployer: ServerlessDeployer, client: FakeMLClient,
                                                       status: int) -> None:
    client.serverless_endpoints.refuse = status

    deployment = deployer.deploy(JOB, "distilled", "phi35-nli")

    assert deployment.state == "failed"
    assert f"HTTP {status}" in deployment.error and "AzureML Data Scientist" in deployment.error
    assert deployment.name in deployment.error and "Traceback" not in deployment.error


def test_a_model_the_service_will_not_deploy_is_failed_with_a_readable_reason(deployer: ServerlessDeployer,
                                                                             client: FakeMLClient) -> None:
    client.serverless_endpoints.refuse = 400

    deployment = deployer.deploy(JOB, "distilled", "phi35-nli")

    assert deployment.state == "failed"
    assert deployment.error.startswith(f"the workspace refused serverless endpoint {deployment.name} for model "
                                       "phi35-nli (HTTP 400: (UserError) This model cannot be deployed")
    assert "\n" not in deployment.error


@pytest.mark.parametrize("status", [429, 500, 503])
def test_a_passing_error_is_raised_so_the_message_comes_again(deployer: ServerlessDeployer, client: FakeMLClient,
                                                              status: int) -> None:
    client.serverless_endpoints.refuse = status
    with pytest.raises(HttpResponseError):
        deployer.deploy(JOB, "distilled", "phi35-nli")


def test_a_model_missing_from_the_workspace_is_failed(deployer: ServerlessDeployer, client: FakeMLClient) -> None:
    deployment = deployer.deploy(JOB, "distilled", "no-such-model")
    assert deployment.state == "failed" and "no model named no-such-model" in deployment.error
    assert client.serverless_endpoints.created == []


@pytest.mark.parametrize("model", ["", "azureml:phi35-nli:3", "models/phi35-nli", "-phi"])
def test_a_model_that_is_no_name_or_id_is_refused_before_any_call(deployer: ServerlessDeployer,
                                                                 client: FakeMLClient, model: str) -> None:
    with pytest.raises(ValueError, match="neither a registered model's name nor an azureml:// model id"):
        deployer.deploy(JOB, "distilled", model)
    assert client.workspaces.asked == [] and client.serverless_endpoints.created == []


def test_same_model() -> None:
    assert same_model(WORKSPACE_MODEL, "phi35-nli")
    assert same_model(WORKSPACE_MODEL.replace("/versions/3", "/versions/4"), "phi35-nli")
    assert not same_model(WORKSPACE_MODEL, "phi35")
    assert not same_model(f"{REGISTRY}/versions/2", "phi35-nli")
    assert same_model(WORKSPACE_MODEL, WORKSPACE_MODEL)
    assert not same_model(WORKSPACE_MODEL, WORKSPACE_MODEL.replace("/versions/3", "/versions/2"))
    assert same_model(REGISTRY.lower(), f"{REGISTRY}/versions/1")


# ---- delete ------------------------------------------------------------------------------------------------------

def test_delete_is_started_not_waited_on_and_safe_to_repeat(deployer: ServerlessDeployer, client: FakeMLClient) -> None:
    name = ready(client, deployer, WORKSPACE_MODEL)

    deployer.delete(JOB, "distilled")
    deployer.delete(JOB, "distilled")  # not found now: fine
    deployer.delete(JOB, "base")  # never made: fine

    assert client.serverless_endpoints.deleted == [name]
    assert client.serverless_endpoints.waits == []


def test_a_refused_delete_is_logged_with_the_role(deployer: ServerlessDeployer, client: FakeMLClient,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    def forbidden(name: str) -> None:
        raise refused(403)

    client.serverless_endpoints.begin_delete = forbidden  # type: ignore[method-assign]
    deployer.delete(JOB, "distilled")
    assert any("AzureML Data Scientist" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)


# ---- names -------------------------------------------------------------------------------------------------------

LONG = "a" * 200


@pytest.mark.parametrize("job", [JOB, "x", "9lives", "Job_With_UPPER-and_under", LONG, f"{LONG}-1", "a-" * 120,
                                 "1" * 255, "A_-_-_B"])
@pytest.mark.parametrize("role", ["distilled", "base"])
def test_names_follow_azures_rule(job: str, role: str) -> None:
    name = endpoint_name(job, role, "sub/rg/ws")
    assert VALID_NAME.match(name), name
    assert role in name


def test_a_short_id_stays_readable() -> None:
    assert endpoint_name(JOB, "distilled", "sub/rg/ws").startswith("nli-1a2b3c4d5-distilled-")
    assert endpoint_name(JOB, "base", "sub/rg/ws").startswith("nli-1a2b3c4d5e6f-base-")
    assert endpoint_name("9lives", "base").startswith("j-9lives-base-")


def test_names_are_deterministic_and_never_shared() -> None:
    jobs = [JOB, f"{LONG}-1", f"{LONG}-2", LONG, "Job_A", "job-a", "job_a", "JOB-A"]
    names = {(job, role): endpoint_name(job, role, "sub/rg/ws") for job in jobs for role in ("distilled", "base")}
    assert len(set(names.values())) == len(names)
    assert all(endpoint_name(job, role, "sub/rg/ws") == name for (job, role), name in names.items())
    assert endpoint_name(JOB, "distilled", "sub/rg/ws") != endpoint_name(JOB, "distilled", "sub/rg/other")


def test_the_deployer_names_endpoints_within_its_workspace(client: FakeMLClient) -> None:
    other = FakeMLClient(workspace_name="other")
    assert ServerlessDeployer(client).endpoint_name(JOB, "base") != ServerlessDeployer(other).endpoint_name(JOB, "base")


# ---- light imports -----------------------------------------------------------------------------------------------

def test_importing_the_module_does_not_import_azure_ai_ml() -> None:
    code = "import sys, shared.finetune.serverless; print(sorted(m for m in sys.modules if m.startswith('azure')))"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
