"""The narrow surfaces through which the pipeline reaches the outside world.

Each has an Azure implementation and a local one, so the local mode runs the very functions that Azure runs:
blob storage (`shared.storage`), the message queue (`shared.queueing`), the teacher (`shared.teacher`: an endpoint
in Azure, a model served on this machine locally), the fine-tuner (`shared.finetune`, `shared.local`) and the progress
of a run (a live bar locally, nothing in Azure, where logs and metrics tell it).
Blob paths are `<container>/<name>`, for example `jobs/nli-1a2b3c4d5e6f/status.json`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from shared.teacher.replies import Failure, TeacherReply


class Conflict(Exception):
    """A conditional write lost: the ETag no longer matches, or the blob already exists."""


@dataclass(frozen=True, slots=True)
class Blob:
    data: bytes
    etag: str


class BlobStore(Protocol):
    def read(self, path: str) -> Blob | None:
        """The blob and its ETag, or None when there is no such blob."""

    def write(self, path: str, data: bytes, *, if_match: str | None = None, if_absent: bool = False) -> str:
        """Write a whole blob and return its new ETag.

        `if_match`: only if the blob's ETag is still this one; `if_absent`: only if no blob exists yet.
        Raises Conflict when the condition fails. Writes are atomic: a reader sees the old or the new blob.
        """

    def read_range(self, path: str, offset: int, length: int) -> bytes | None:
        """At most `length` bytes of a blob from `offset` (fewer at its end, none past it); None when there is no
        such blob. Lets a reader page through a large blob without fetching it whole."""

    def download_to(self, path: str, dest: Path) -> bool:
        """Stream a blob into a local file, never holding it whole in memory; False when there is no such blob."""

    def upload_from(self, path: str, src: Path) -> str:
        """Stream a local file into a blob (overwriting it) and return its ETag."""

    def list(self, prefix: str) -> Iterator[str]:
        """The paths of the blobs whose path starts with `prefix`, in lexical order."""

    def folders(self, prefix: str) -> Iterator[str]:
        """The names of the folders directly below `prefix` (a container, or a path ending in '/') that hold blobs,
        in lexical order, without walking their contents."""

    def delete(self, path: str) -> bool:
        """Remove a blob; False when there was none (so it is safe to repeat)."""


MESSAGE_ID_CHARS = 128  # Service Bus's limit on a message id
MESSAGE_BYTES = 256 * 1024  # Service Bus's limit on a message (Standard tier), which the local queue enforces too


@dataclass(frozen=True, slots=True)
class OutgoingMessage:
    """A queue message: a JSON body, an id for duplicate detection, an optional delivery time, and application
    properties (the W3C `traceparent` of the span that sent it, see shared.tracing)."""

    body: Mapping[str, Any]
    message_id: str
    scheduled_at: datetime | None = None  # timezone-aware UTC
    properties: Mapping[str, str] = field(default_factory=dict)


class PublishFailed(Exception):
    """Events could not be published now; the outbox keeps them for the next try."""


class EventPublisher(Protocol):
    """Where Distill's own events go (shared.jobs.events): an Event Grid topic in Azure, webhooks locally."""

    def publish(self, events: Sequence[Mapping[str, Any]]) -> list[dict[str, str]]:
        """Send CloudEvents (structured JSON), in order. Returns `{"id", "to", "error"}` for each event a subscriber
        was not sent and will not be sent; raises PublishFailed when the whole send is worth trying again later."""
        ...


class NoPublisher:
    """No subscriber is configured: events are kept in the job's `events.jsonl` only."""

    def publish(self, events: Sequence[Mapping[str, Any]]) -> list[dict[str, str]]:
        return []


class QueueSender(Protocol):
    def send(self, queue: str, messages: Sequence[OutgoingMessage]) -> None:
        """Send messages to a queue (in batches where the service has a size limit).

        A message whose id was already sent within the duplicate-detection window is dropped by the queue.
        """


@dataclass(frozen=True, slots=True)
class FineTuneRequest:
    """Everything a fine-tuner needs; `name` is deterministic per job, so starting twice starts one run."""

    name: str
    job_id: str
    student_model: str
    train_path: str  # blob path of train.jsonl
    validation_path: str  # blob path of validation.jsonl
    experiment_name: str
    hyperparameters: Mapping[str, str | int | float] = field(default_factory=dict)
    method: str = "full"
    output_model_name: str | None = None
    tags: Mapping[str, str] = field(default_factory=dict)
    display_name: str | None = None
    description: str | None = None
    instance_type: str | None = None  # managed compute of this VM size instead of serverless fine-tuning


@dataclass(frozen=True, slots=True)
class RunState:
    """A fine-tune run's status as its service reports it (AzureML casing: Completed, Failed, Running...)."""

    name: str
    status: str
    output_model: str | None = None
    error: str | None = None


class FineTuneRefused(Exception):
    """The fine-tune cannot be started, and trying again will not change that: the job fails with this reason."""


class FineTuner(Protocol):
    def start(self, request: FineTuneRequest) -> str:
        """Start the run (or find the one already started under `request.name`) and return its name."""

    def state(self, name: str) -> RunState:
        """The run's current status, for the fallback poller."""


@dataclass(frozen=True, slots=True)
class Deployment:
    """A model deployed for the evaluation step, as it stands: "creating", "ready", "failed", or "absent" (none of
    that name). A ready one gives the base URL of its OpenAI-compatible API and the key it takes (held in memory
    only, never stored or logged); `kind` is how it is reached: "azure_ai" (a serverless endpoint) or "local" (a model
    served on this machine); `in_flight`, where known, how many calls it answers well at once."""

    name: str
    state: str
    url: str | None = None
    key: str | None = field(default=None, repr=False)
    kind: str = "azure_ai"
    error: str | None = None
    in_flight: int | None = None


class ModelDeployer(Protocol):
    """Deploys a model for a while, for the evaluation step (shared.pipeline.evaluate): an AzureML serverless endpoint
    in Azure, a model server on this machine locally. The deployment's name follows from (job, role) by the platform's
    own naming rules; no call waits for a deployment to finish."""

    def deploy(self, job: str, role: str, model: str) -> Deployment:
        """Begin deploying `model` for the job's `role` ("distilled", "base"), or, when that deployment exists, return
        it as it stands; safe to repeat. One that exists for another model is returned "failed", with the reason.
        Raises ValueError when `model` cannot be deployed this way (a readable reason)."""

    def delete(self, job: str, role: str) -> None:
        """Remove the deployment (not waiting for the removal to end); safe to repeat, and for one never made."""


TERMINAL_STATUSES = frozenset({"Completed", "Failed", "Canceled", "NotResponding", "Paused"})


class Teacher(Protocol):
    """One teacher endpoint, one HTTP attempt at a time; retries, pacing and caching are wrapped around it
    (shared.teacher.factory). No secret is ever in its URL, its repr or a failure's detail."""

    @property
    def endpoint(self) -> str:
        """The URL a request body is POSTed to."""

    @property
    def auth_header(self) -> str | None:
        """The credential header sent, its value replaced by a placeholder (for `distill preview`)."""

    def request_body(self, messages: list[dict]) -> dict:
        """The exact JSON body sent for these messages: no secrets, no network."""

    async def attempt(self, body: dict) -> TeacherReply | Failure:
        """Send one request; the reply, or the failure classified (retryable or not, the server's headers)."""

    async def aclose(self) -> None:
        """Close connections and credentials."""


class Progress(Protocol):
    """Told as each row of a job finishes labelling, of long waits for the teacher, and of the long steps after
    labelling (the local progress bar; nothing in Azure, where the logs tell them)."""

    def row_done(self, job: str, accepted: int, rejected: int, tokens: int) -> None: ...

    def waiting(self, job: str, seconds: float, why: str) -> None: ...

    def paced(self, job: str, per_minute: float, source: str) -> None:
        """The teacher's calls are paced at `per_minute`, "configured", read from the endpoint's "headers" or
        "learned" from its 429s."""

    def step(self, job: str, what: str) -> None:
        """A long step of the job begins ("asking the distilled student 80 validation rows")."""
