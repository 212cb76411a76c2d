"""AzureMLFineTuner: fine-tunes the student as an AzureML fine-tuning job (azure-ai-ml).

`azure.ai.ml` (about 1 s and 100 MB to import) and `azure.identity` are imported inside the functions that need
them, never when this module is imported, so `import function_app` stays light.

Nothing secret reaches the job: its tags are Distill ids (`distill_job` plus the request's tags) and it has no
properties. (The SDK's own distillation job writes the teacher key into its properties; that is never done here.)
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shared.finetune.run_events import JOB_TAG, normalise_status
from shared.ports import TERMINAL_STATUSES, BlobStore, FineTuneRefused, FineTuneRequest, RunState

if TYPE_CHECKING:
    from azure.ai.ml import MLClient
    from azure.ai.ml.entities import Job
    from azure.core.credentials import TokenCredential

DATA_VERSION = "1"  # a run name is deterministic per job, so its data assets never change
OUTPUT = "registered_model"  # the fine-tuning job's output naming the registered model
FIRST_PARTY_REGISTRIES = frozenset({"azureml", "azureml-msr", "azure-openai"})  # Microsoft's: no Marketplace offer
_REGISTRY_MODEL = re.compile(r"^azureml://registries/(?P<registry>[^/]+)/models/(?P<model>[^/]+)")


class AzureMLFineTuner:
    """A FineTuner backed by AzureML serverless (or managed-compute) fine-tuning."""

    def __init__(self, ml_client: MLClient, store: BlobStore) -> None:
        self.ml_client = ml_client  # public for callers that need more of the workspace
        self._store = store

    @classmethod
    def from_settings(cls, subscription_id: str, resource_group: str, workspace: str, *, store: BlobStore,
                      credential: TokenCredential | None = None) -> AzureMLFineTuner:
        """A fine-tuner for one workspace; `credential` defaults to DefaultAzureCredential (no network call yet)."""
        from azure.ai.ml import MLClient

        if credential is None:
            from azure.identity import DefaultAzureCredential

            credential = DefaultAzureCredential()
        client = MLClient(credential=credential, subscription_id=subscription_id,
                          resource_group_name=resource_group, workspace_name=workspace)
        return cls(client, store)

    def start(self, request: FineTuneRequest) -> str:
        """Submit the job once per run name: when a job of that name exists, return it untouched.

        Registers the train/validation blobs as data assets `<name>-train` / `<name>-validation` (version 1)
        first. Raises FileNotFoundError when a blob is missing.
        """
        if self._find(request.name) is not None:
            return request.name
        if model := marketplace_model(request.student_model):
            self._subscribe(model)
        train_id, validation_id = self._register_data(request)
        created = self.ml_client.jobs.create_or_update(self.build_job(request, train_id, validation_id))
        return created.name or request.name

    def state(self, name: str) -> RunState:
        """The job's status, its registered model once Completed; raises LookupError for an unknown name."""
        job = self._find(name)
        if job is None:
            raise LookupError(f"no AzureML job named {name}")
        status = normalise_status(getattr(job.status, "value", job.status)) or "Unknown"  # the SDK gives an enum
        return RunState(
            name=name,
            status=status,
            output_model=_output_model(job) if status == "Completed" else None,
            error=_error(status),
        )

    def build_job(self, request: FineTuneRequest, train_asset_id: str, validation_asset_id: str) -> Job:
        """The SDK's fine-tuning job entity for `request` (chat completion); validation data is always given,
        as azure-ai-ml 1.35.2 raises UnboundLocalError without it."""
        from azure.ai.ml.finetuning import FineTuningTaskType, create_finetuning_job

        return create_finetuning_job(
            model=request.student_model,
            task=FineTuningTaskType.CHAT_COMPLETION,
            training_data=train_asset_id,
            validation_data=validation_asset_id,
            hyperparameters={key: str(value) for key, value in request.hyperparameters.items()},
            output_model_name_prefix=request.output_model_name or request.name,
            instance_types=[request.instance_type] if request.instance_type else None,
            name=request.name,
            display_name=request.display_name,
            description=request.description,
            experiment_name=request.experiment_name,
            tags=job_tags(request),
        )

    def _subscribe(self, model: str) -> None:
        """Make sure the workspace has the Marketplace subscription a partner's model is fine-tuned under (created once,
        by name); FineTuneRefused, with what an administrator runs, when the app may not create it."""
        from azure.ai.ml.entities import MarketplaceSubscription
        from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

        name = subscription_name(model)
        try:
            self.ml_client.marketplace_subscriptions.get(name)
            return
        except ResourceNotFoundError:
            pass
        try:
            self.ml_client.marketplace_subscriptions.begin_create_or_update(
                MarketplaceSubscription(model_id=model, name=name)).result()
        except HttpResponseError as exc:
            if exc.status_code not in (401, 403):
                raise
            raise FineTuneRefused(
                f"the student {model} is fine-tuned under a Marketplace subscription in the workspace, which the app "
                f"may not create (HTTP {exc.status_code}; deploying with partnerStudents grants it); an administrator "
                f"creates it once with `az ml marketplace-subscription create --resource-group <group> "
                f"--workspace-name <workspace> --file sub.yml` where sub.yml says `name: {name}` and "
                f"`model_id: {model}`, then runs the job again") from None

    def _find(self, name: str) -> Job | None:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            return self.ml_client.jobs.get(name)
        except ResourceNotFoundError:
            return None

    def _register_data(self, request: FineTuneRequest) -> tuple[str, str]:
        """Download both blobs and register them as uri_file data assets; their asset ids.

        Fixed local file names keep the upload path (content hash + file name) the same when a start is retried,
        so registering the same version again is accepted.
        """
        from azure.ai.ml.constants import AssetTypes
        from azure.ai.ml.entities import Data

        ids = []
        with tempfile.TemporaryDirectory(prefix="distill-finetune-") as tmp:
            for role, blob in (("train", request.train_path), ("validation", request.validation_path)):
                local = Path(tmp) / f"{role}.jsonl"
                if not self._store.download_to(blob, local):
                    raise FileNotFoundError(f"missing blob: {blob}")
                data = Data(type=AssetTypes.URI_FILE, path=str(local), name=f"{request.name}-{role}",
                            version=DATA_VERSION, description=f"Distill {role} data")
                ids.append(self.ml_client.data.create_or_update(data).id)
        return ids[0], ids[1]


def marketplace_model(student: str) -> str | None:
    """The model id (without its version) a Marketplace subscription must exist for before a student from a partner's
    registry (Meta, Mistral, Cohere...) is fine-tuned; None for Microsoft's own models and for anything else."""
    match = _REGISTRY_MODEL.match(student)
    if match is None or match["registry"] in FIRST_PARTY_REGISTRIES:
        return None
    return f"azureml://registries/{match['registry']}/models/{match['model']}"


def subscription_name(model: str) -> str:
    """A Marketplace subscription name for a model id: its model name, lower case, letters, digits and '-'."""
    return re.sub(r"[^a-z0-9-]+", "-", model.rsplit("/", 1)[1].lower()).strip("-")[:50]


def job_tags(request: FineTuneRequest) -> dict[str, str]:
    """The job's tags: the request's, plus `distill_job`, which run events are matched by."""
    return {**request.tags, JOB_TAG: request.job_id}


def _output_model(job: Any) -> str | None:
    """The registered model's name: `job.outputs["registered_model"].name`."""
    return getattr((job.outputs or {}).get(OUTPUT), "name", None) or None


def _error(status: str) -> str | None:
    """A short reason for a run that ended without success (AzureML keeps the details in its logs)."""
    if status == "Completed" or status not in TERMINAL_STATUSES:
        return None
    return f"the AzureML job ended {status}; its logs are in AzureML studio"
