"""The adapters a function works with, chosen once per process from the app settings.

In Azure: Blob Storage, Service Bus and AzureML, from their connection settings; the teacher is the endpoint each
manifest names. In the local mode, `distill run` installs local ones (a folder, the embedded queue, the local
fine-tuner, the address of the model it serves, a progress bar) before it drives the same functions.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from shared import redaction
from shared.ports import (
    BlobStore,
    Deployment,
    EventPublisher,
    FineTuner,
    FineTuneRequest,
    ModelDeployer,
    NoPublisher,
    Progress,
    QueueSender,
    RunState,
)
from shared.settings import Settings


@dataclass
class Services:
    store: BlobStore
    queue: QueueSender
    finetuner: FineTuner
    settings: Settings = field(default_factory=Settings)
    environ: Mapping[str, str] = field(default_factory=lambda: os.environ)  # where teacher keys are read
    local_teacher_url: str | None = None  # the model `distill run` serves on this machine (teacher.kind local)
    progress: Progress | None = None  # told as each row finishes
    publisher: EventPublisher = field(default_factory=NoPublisher)  # where Distill's own events go
    deployer: ModelDeployer | None = None  # deploys a fine-tuned model for its evaluation (shared.pipeline.evaluate)


_current: Services | None = None


def install(services: Services | None) -> None:
    """Use these services in this process (the local runtime and tests); None goes back to the app settings."""
    global _current
    _current = services


def current() -> Services:
    """The process's services, built from the app settings on first use."""
    global _current
    if _current is None:
        _current = from_app_settings(os.environ)
    return _current


def from_app_settings(environ: Mapping[str, str]) -> Services:
    """Azure adapters from the Functions app settings (connection strings, or identity-based `__` settings), all
    signed in with one credential (`app_credential`). The AzureML fine-tuner and the serverless deployer (of the same
    workspace) are built on their first use, so only the steps that fine-tune or evaluate import azure.ai.ml.

    The settings' secrets are redacted from every log record from here on (shared.redaction)."""
    redaction.install(environ)
    from shared.queueing.servicebus import ServiceBusQueueSender
    from shared.storage.azure_blob import AzureBlobStore

    credential = app_credential(environ)
    if conn := environ.get("DistillStorage"):
        store = AzureBlobStore.from_connection_string(conn)
    else:
        store = AzureBlobStore.from_account_url(required(environ, "DistillStorage__serviceUri"), credential)
    if conn := environ.get("DistillServiceBus"):
        queue = ServiceBusQueueSender.from_connection_string(conn)
    else:
        namespace = required(environ, "DistillServiceBus__fullyQualifiedNamespace")
        queue = ServiceBusQueueSender.from_namespace(namespace, credential)
    workspace = (required(environ, "AZUREML_SUBSCRIPTION_ID"), required(environ, "AZUREML_RESOURCE_GROUP"),
                 required(environ, "AZUREML_WORKSPACE"))

    def azureml() -> FineTuner:
        from shared.finetune.azureml import AzureMLFineTuner

        return AzureMLFineTuner.from_settings(*workspace, store=store, credential=credential)

    def serverless() -> ModelDeployer:
        from shared.finetune.serverless import ServerlessDeployer

        return ServerlessDeployer.from_settings(*workspace, credential=credential)

    publisher: EventPublisher = NoPublisher()
    if topic := environ.get("DISTILL_EVENTS_TOPIC_ENDPOINT"):  # Distill's own events go to this Event Grid topic
        from shared.publishing.eventgrid import EventGridPublisher

        publisher = EventGridPublisher.from_endpoint(topic, credential)
    return Services(store=store, queue=queue, finetuner=OnFirstUse(azureml), settings=Settings.from_env(environ),
                    environ=environ, publisher=publisher, deployer=DeployerOnFirstUse(serverless))


def app_credential(environ: Mapping[str, str]) -> Any:
    """One credential for every Azure client: the app's user-assigned managed identity (its client id is the app
    setting AZURE_CLIENT_ID), else DefaultAzureCredential (a developer's sign-in). Nothing is fetched until a client
    asks."""
    if client_id := environ.get("AZURE_CLIENT_ID"):
        from azure.identity import ManagedIdentityCredential

        return ManagedIdentityCredential(client_id=client_id)
    from azure.identity import DefaultAzureCredential

    return DefaultAzureCredential()


T = TypeVar("T")


class Lazy(Generic[T]):
    """An adapter built when it is first asked for something."""

    def __init__(self, build: Callable[[], T]) -> None:
        self._build = build
        self._built: T | None = None

    def _get(self) -> T:
        if self._built is None:
            self._built = self._build()
        return self._built


class OnFirstUse(Lazy[FineTuner]):
    """A FineTuner built when it is first asked for something."""

    def start(self, request: FineTuneRequest) -> str:
        return self._get().start(request)

    def state(self, name: str) -> RunState:
        return self._get().state(name)


class DeployerOnFirstUse(Lazy[ModelDeployer]):
    """A ModelDeployer built when it is first asked for something."""

    def deploy(self, job: str, role: str, model: str) -> Deployment:
        return self._get().deploy(job, role, model)

    def delete(self, job: str, role: str) -> None:
        self._get().delete(job, role)


def required(environ: Mapping[str, str], name: str) -> str:
    value = environ.get(name)
    if not value:
        raise RuntimeError(f"app setting {name} is not set")
    return value
