"""ServerlessDeployer: deploys a model for the evaluation step as an AzureML serverless endpoint (azure-ai-ml).

A model the fine-tune registered in the workspace is deployed by the id
`azureml://locations/<region>/workspaces/<workspace guid>/models/<name>/versions/<version>` (its latest version); a
catalog model by its registry id without a version, since a serverless endpoint always serves a registry model's
latest version. No call waits on the service: creation and deletion are started and their pollers dropped, and the
evaluation step calls `deploy()` again later to see how the endpoint stands.

An endpoint's name is part of its URL, `https://<name>.<region>.models.ai.azure.com`, so it must be unique in its
region across every workspace. Names follow AzureML's rule for endpoint names (3 to 32 characters; letters, digits
and single hyphens; a letter first and no hyphen last) and end with a digest of the workspace, the job and the role.

The endpoint's key goes into the returned Deployment and nowhere else: never into a log record or a reason.
`azure.ai.ml` is imported inside the functions that use it, never when this module is imported.
"""

from __future__ import annotations

import hashlib
import logging
import re
from typing import TYPE_CHECKING, Any

from shared.manifest.endpoints import base_url_of, place
from shared.ports import Deployment

if TYPE_CHECKING:
    from azure.ai.ml import MLClient
    from azure.core.credentials import TokenCredential
    from azure.core.exceptions import HttpResponseError

log = logging.getLogger(__name__)

NAME_MAX = 32  # AzureML endpoint names: 3 to 32 characters
DIGEST_CHARS = 8
ROLE_CHARS = 9  # "distilled"
ROLE = "AzureML Data Scientist"  # the workspace role infra grants the app: serverless endpoints and their keys included
RETRIED = frozenset({408, 429})  # statuses that pass: raised, so that the queue delivers the message again
# The SDK's provisioning states (lower case), as a Deployment's. An endpoint being deleted is waited for: once it is
# gone, the next look creates it again.
STATES = {"creating": "creating", "updating": "creating", "deleting": "creating", "succeeded": "ready",
          "failed": "failed", "canceled": "failed"}
_MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,254}$")  # a registered model's name
_REGISTRY_VERSION = re.compile(r"^(azureml://registries/[^/]+/models/[^/]+)/versions/[^/]+/?$")
_MODEL_OF = re.compile(r"/workspaces/[^/]+/models/([^/]+)/versions/[^/]+/?$")


class ServerlessDeployer:
    """A ModelDeployer backed by the serverless endpoints of one AzureML workspace."""

    def __init__(self, ml_client: MLClient) -> None:
        self.ml_client = ml_client

    @classmethod
    def from_settings(cls, subscription_id: str, resource_group: str, workspace: str, *,
                      credential: TokenCredential | None = None) -> ServerlessDeployer:
        """A deployer for one workspace; `credential` defaults to DefaultAzureCredential (no network call yet)."""
        from azure.ai.ml import MLClient

        if credential is None:
            from azure.identity import DefaultAzureCredential

            credential = DefaultAzureCredential()
        return cls(MLClient(credential=credential, subscription_id=subscription_id,
                            resource_group_name=resource_group, workspace_name=workspace))

    def endpoint_name(self, job: str, role: str) -> str:
        """The endpoint's name for a job's role in this workspace."""
        client = self.ml_client
        scope = f"{client.subscription_id}/{client.resource_group_name}/{client.workspace_name}"
        return endpoint_name(job, role, scope)

    def deploy(self, job: str, role: str, model: str) -> Deployment:
        """Create the endpoint, or report how it stands; ValueError for a `model` that is neither a registered model's
        name nor an `azureml://` model id. A refusal by the service is a "failed" Deployment with the reason; a
        passing error (5xx, 408, 429) is raised."""
        from azure.core.exceptions import HttpResponseError

        name = self.endpoint_name(job, role)
        model_id = given_model_id(model)
        try:
            endpoint = self._find(name)
            if endpoint is None:
                return self._create(name, model, model_id)
            return self._as_deployment(name, endpoint, model)
        except HttpResponseError as exc:
            if passing(exc):
                raise
            return Deployment(name, "failed", error=refusal(exc, name, model))

    def delete(self, job: str, role: str) -> None:
        """Start deleting the endpoint, not waiting for it; one that is not there is fine. A refusal is logged, with
        the role the app needs; a passing error is raised."""
        from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

        name = self.endpoint_name(job, role)
        try:
            self.ml_client.serverless_endpoints.begin_delete(name)  # the request is sent; its poller is dropped
        except ResourceNotFoundError:
            return
        except HttpResponseError as exc:
            if passing(exc):
                raise
            log.warning("serverless endpoint %s could not be deleted: %s", name, refusal(exc, name))
            return
        log.info("serverless endpoint %s: deleting", name)

    def _find(self, name: str) -> Any:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            return self.ml_client.serverless_endpoints.get(name)
        except ResourceNotFoundError:
            return None

    def _create(self, name: str, model: str, model_id: str | None) -> Deployment:
        """Start creating the endpoint (a registered model by its latest version); "creating"."""
        from azure.ai.ml.entities import ServerlessEndpoint
        from azure.ai.ml.exceptions import ValidationException
        from azure.core.exceptions import ResourceNotFoundError

        workspace = self.ml_client.workspaces.get(self.ml_client.workspace_name)
        if model_id is None:
            try:
                version = self.ml_client.models.get(model, label="latest").version
            except (ResourceNotFoundError, ValidationException):  # the SDK's answer for a name with no version
                return Deployment(name, "failed", error=f"no model named {model} is registered in the workspace, so "
                                                        f"serverless endpoint {name} cannot serve it")
            # The workspace's guid is only an underscored attribute of the SDK's Workspace (as in its own samples).
            model_id = workspace_model_id(workspace.location, workspace._workspace_id, model, str(version))
        endpoint = ServerlessEndpoint(name=name, model_id=model_id)
        endpoint.location = workspace.location  # spares the SDK its own look-up of the workspace
        self.ml_client.serverless_endpoints.begin_create_or_update(endpoint)  # the request is sent; poller dropped
        log.info("serverless endpoint %s: creating, for model %s", name, model_id)
        return Deployment(name, "creating")

    def _as_deployment(self, name: str, endpoint: Any, model: str) -> Deployment:
        """An existing endpoint as a Deployment: ready ones with their base URL and primary key."""
        if not same_model(endpoint.model_id, model):
            return Deployment(name, "failed", error=f"serverless endpoint {name} exists for another model "
                                                    f"({endpoint.model_id}), not {model}")
        state = STATES.get(str(endpoint.provisioning_state or "").lower(), "creating")
        if state == "failed":
            return Deployment(name, "failed", error=f"serverless endpoint {name} for model {endpoint.model_id} ended "
                                                    f"{endpoint.provisioning_state}; AzureML studio shows why")
        if state == "creating":
            return Deployment(name, "creating")
        try:
            url = base_url_of(place(endpoint.scoring_uri or "", "azure_ai").url)
        except ValueError:
            return Deployment(name, "failed", error=f"serverless endpoint {name} is ready but gives no usable "
                                                    f"inference URL ({endpoint.scoring_uri!r})")
        key = self.ml_client.serverless_endpoints.get_keys(name).primary_key
        if not key:
            return Deployment(name, "failed", error=f"serverless endpoint {name} is ready but gives no key")
        return Deployment(name, "ready", url=url, key=key)


def endpoint_name(job: str, role: str, scope: str = "") -> str:
    """`<job>-<role>-<digest>`: the job id and role in lower case, runs of other characters as one hyphen, the job id
    cut to fit 32 characters (and prefixed `j-` when it does not start with a letter). The digest, of the scope (the
    workspace), the job id and the role exactly as given, keeps apart ids that differ only in case, in `_` against
    `-`, or after the cut, and workspaces in one region that use the same job ids."""
    digest = hashlib.sha256(f"{scope.lower()}\n{job}\n{role}".encode()).hexdigest()[:DIGEST_CHARS]
    role_part = _slug(role)[:ROLE_CHARS].strip("-")
    job_part = _slug(job)
    if not job_part[:1].isalpha():
        job_part = f"j-{job_part}"
    room = NAME_MAX - len(role_part) - DIGEST_CHARS - 2
    return "-".join(part for part in (job_part[:room].strip("-"), role_part, digest) if part)


def given_model_id(model: str) -> str | None:
    """The serverless model id `model` is (a registry model's without its version), or None for a registered model's
    name, which is resolved in the workspace; ValueError for anything else."""
    if model.startswith("azureml://"):
        match = _REGISTRY_VERSION.match(model)
        return match[1] if match else model
    if _MODEL_NAME.match(model):
        return None
    raise ValueError(f"{model!r} is neither a registered model's name nor an azureml:// model id, so it cannot be "
                     "deployed as a serverless endpoint")


def workspace_model_id(location: str, workspace_id: str, name: str, version: str) -> str:
    """The id a serverless endpoint deploys a workspace's registered model by."""
    return f"azureml://locations/{location}/workspaces/{workspace_id}/models/{name}/versions/{version}"


def same_model(deployed: str | None, model: str) -> bool:
    """Whether an endpoint serving `deployed` serves `model`: the same id (a registry model's whatever the version),
    or, for a registered model's name, a version of the workspace's model of that name. An endpoint that names no
    model is taken to serve it."""
    if not deployed:
        return True
    wanted = given_model_id(model)
    if wanted is None:
        match = _MODEL_OF.search(deployed)
        return match is not None and match[1] == model
    return _unversioned(deployed).rstrip("/").lower() == wanted.rstrip("/").lower()


def passing(exc: HttpResponseError) -> bool:
    """Whether a service error may pass by itself (no status, 5xx, 408, 429)."""
    status = exc.status_code
    return status is None or status >= 500 or status in RETRIED


def refusal(exc: HttpResponseError, name: str, model: str | None = None) -> str:
    """A readable reason for a refused call: for 401/403 the role the app's identity needs; never a stack trace."""
    status, endpoint = exc.status_code, f"serverless endpoint {name}" + (f" for model {model}" if model else "")
    if status in (401, 403):
        return (f"the app's identity may not manage {endpoint} (HTTP {status}): it needs the {ROLE} role on the "
                "workspace, which covers serverless endpoints and their keys (infra/modules/workspace.bicep grants it)")
    detail = (str(exc.message or exc.reason or "").strip().splitlines() or ["no detail"])[0][:300]
    return (f"the workspace refused {endpoint} (HTTP {status}: {detail}); not every model can be deployed "
            "serverless, nor in every region: see the model's card in the catalog")


def _unversioned(model_id: str) -> str:
    match = _REGISTRY_VERSION.match(model_id)
    return match[1] if match else model_id


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
