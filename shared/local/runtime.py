"""The embedded local runtime: the functions registered in `function_app.py`, driven on this machine.

A folder stands in for blob storage, an SQLite queue with Service Bus semantics for Service Bus, and a local
queue of Event Grid-shaped events for Event Grid. Each trigger gets the Azure Functions SDK's own input type. Distill's
own events go to the webhooks in `DISTILL_EVENT_WEBHOOKS` (shared.publishing.webhooks).
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import sys
import time
from collections.abc import Callable, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import azure.functions as func
from azure.functions.blob import InputStream
from azure.functions.servicebus import ServiceBusMessage

from shared import services
from shared.local.export_only import ExportOnlyFineTuner
from shared.pipeline import interrupt
from shared.pipeline.job_requests import refusal
from shared.ports import BlobStore, FineTuner, ModelDeployer, NoPublisher, OutgoingMessage, Progress
from shared.publishing.webhooks import WebhookPublisher
from shared.queueing.local import LocalQueue, LockLost, ReceivedMessage
from shared.services import Services
from shared.settings import Settings

log = logging.getLogger(__name__)

EVENTS_QUEUE = "events"  # local stand-in for the Event Grid subscription to the workspace's run events
LOCAL_WORKSPACE = ("/subscriptions/local/resourceGroups/local/providers/"
                   "Microsoft.MachineLearningServices/workspaces/distill-local")
# (store, publish an Event Grid-shaped event, workspace topic) → the fine-tuner; ExportOnlyFineTuner by default
FineTunerFactory = Callable[[BlobStore, Callable[[dict[str, Any]], None], str], FineTuner]
_TRIGGER_KEYS = {"blobTrigger": "blob", "eventGridTrigger": "eventgrid"}


@functools.cache
def registered_functions() -> dict[str, tuple[Callable[..., Any], str]]:
    """Trigger key ("blob", "eventgrid", "queue:<name>") → (the registered Python function, its argument name).

    Read once per process: the SDK refuses a second `get_functions()` call.
    """
    import function_app

    found: dict[str, tuple[Callable[..., Any], str]] = {}
    for function in function_app.app.get_functions():
        trigger = function.get_trigger().get_dict_repr()
        kind = trigger["type"]
        key = f"queue:{trigger['queueName']}" if kind == "serviceBusTrigger" else _TRIGGER_KEYS.get(kind)
        if key:
            found[key] = (function.get_user_function(), trigger["name"])
    return found


class LocalRuntime:
    """Runs one job's messages through the registered functions until the job is done or nothing is left."""

    def __init__(self, store: BlobStore, queue_db: Path, *, environ: Mapping[str, str],
                 local_teacher_url: str | None = None, progress: Progress | None = None, workers: int = 4,
                 lock_seconds: float = 30.0, finetuner: FineTunerFactory = ExportOnlyFineTuner,
                 deployer: ModelDeployer | None = None) -> None:
        self.queue = LocalQueue(queue_db, lock_seconds=lock_seconds, max_delivery_count=5)
        self.queue.release_locks()  # one run per job holds its lock file: any lock left is a killed run's
        self.workers = workers
        self.lock_seconds = lock_seconds
        # One process runs every function here: a claim is never stale, and a rate-limit wait sleeps (no lock is held
        # that another instance could take over), so defer_after_seconds is None.
        settings = Settings(workspace_topic=LOCAL_WORKSPACE, finetune_claim_seconds=0, defer_after_seconds=None)
        self.services = Services(store=store, queue=self.queue, settings=settings,
                                 finetuner=finetuner(store, self.publish_event, LOCAL_WORKSPACE),
                                 environ=environ, local_teacher_url=local_teacher_url, progress=progress,
                                 publisher=WebhookPublisher.from_environment(environ) or NoPublisher(),
                                 deployer=deployer)
        self.queues = [settings.shard_queue, settings.completion_queue, settings.evaluation_queue, EVENTS_QUEUE,
                       settings.request_queue]
        services.install(self.services)  # the functions ask shared.services for their adapters
        self._last_error: dict[tuple[str, str], str] = {}  # (queue, message id) → the handler's last failure
        self._dead_letters_delivered: set[tuple[str, str]] = set()

    def publish_event(self, event: dict[str, Any]) -> None:
        """Local Event Grid: events wait in a durable queue until the runtime delivers them."""
        self.queue.send(EVENTS_QUEUE, [OutgoingMessage(event, message_id=str(event["id"]))])

    def blob_created(self, path: str) -> None:
        """Deliver a BlobCreated event to the blob trigger, as the Event Grid blob trigger would."""
        blob = self.services.store.read(path)
        if blob is None:
            raise FileNotFoundError(path)
        function, arg = registered_functions()["blob"]
        function(**{arg: InputStream(data=blob.data, name=path, length=len(blob.data), uri=f"local:///{path}")})

    def deliver(self, message: ReceivedMessage) -> None:
        """Call the function bound to the message's queue with the SDK's trigger type."""
        if message.queue == EVENTS_QUEUE:
            function, arg = registered_functions()["eventgrid"]
            function(**{arg: event_grid_event(message.body)})
            return
        function, arg = registered_functions()[f"queue:{message.queue}"]
        function(**{arg: service_bus_message(message.body, message.message_id, message.delivery_count,
                                             properties=message.properties)})

    def handle_requests(self) -> None:
        """Deliver the job requests waiting on the jobs queue, one at a time, each settled before the next."""
        while received := self.queue.receive(self.services.settings.request_queue, 1):
            outcome: Future[None] = Future()
            try:
                self.deliver(received[0])
                outcome.set_result(None)
            except Exception as exc:  # settled as a failed delivery, as in `drain`
                outcome.set_exception(exc)
            self._settle(received[0], outcome)

    def deliver_dead_letters(self) -> None:
        """Hand dead letters not yet handed over to the dead-letter triggers (`<queue>/$DeadLetterQueue`).

        In memory only: after a restart they are handed over again, which the handler takes calmly.
        """
        triggers = registered_functions()
        for queue in (q for q in self.queues if f"queue:{q}/$DeadLetterQueue" in triggers):
            for letter in self.queue.dead_letters(queue):
                key = (queue, letter.message_id)
                if key in self._dead_letters_delivered:
                    continue
                function, arg = triggers[f"queue:{queue}/$DeadLetterQueue"]
                description = self._last_error.get(key) or letter.description
                function(**{arg: service_bus_message(letter.body, letter.message_id, letter.delivery_count,
                                                     dead_letter=(letter.reason, description))})
                self._dead_letters_delivered.add(key)

    def drain(self, finished: Callable[[], bool], idle_wait: float = 0.05) -> None:
        """Deliver messages (shards in parallel, the rest one at a time) until `finished()` or the queues are empty.

        Ctrl-C cancels the handlers in progress (shared.pipeline.interrupt) and hands their messages back, so the
        job stops within seconds, however long its teacher calls would take, and continues on the next run. That
        holds too while handlers that outlived their job (it failed, or was cancelled) are finishing: they are
        waited for, and settled, within the same reach of Ctrl-C.
        """
        with ThreadPoolExecutor(self.workers, thread_name_prefix="distill-worker") as pool:
            running: dict[Future[None], ReceivedMessage] = {}
            try:
                self._drain(pool, running, finished, idle_wait)
            except KeyboardInterrupt:
                print(f"\nstopping: {len(running)} messages in progress are handed back; the job is kept, and the same "
                      "command continues it (Ctrl-C again quits at once)", file=sys.stderr, flush=True)
                interrupt.cancel_all()
                pool.shutdown(wait=False, cancel_futures=True)
                for message in running.values():
                    with contextlib.suppress(LockLost):
                        self.queue.abandon(message)
                raise

    def _drain(self, pool: ThreadPoolExecutor, running: dict[Future[None], ReceivedMessage],
               finished: Callable[[], bool], idle_wait: float) -> None:
        renewed = time.monotonic()
        while not finished():
            self.deliver_dead_letters()
            self._fill(pool, running)
            if not running:
                if self.queue.idle(self.queues):
                    return
                time.sleep(idle_wait)
                continue
            renewed = self._settle_some(running, renewed)
        while running:  # handlers that outlived their job (it failed, or was cancelled): settled as they finish
            renewed = self._settle_some(running, renewed)

    def _settle_some(self, running: dict[Future[None], ReceivedMessage], renewed: float) -> float:
        """Settle the handlers that finish within a second (at most a third of the lock, so Ctrl-C gets through and
        locks are renewed in time), renewing the others' locks when `renewed` is that long ago; when they last were."""
        done, _ = wait(running, timeout=min(1.0, self.lock_seconds / 3), return_when=FIRST_COMPLETED)
        for future in done:
            self._settle(running.pop(future), future)
        if time.monotonic() - renewed > self.lock_seconds / 3:
            self._renew(running)
            return time.monotonic()
        return renewed

    def _fill(self, pool: ThreadPoolExecutor, running: dict[Future[None], ReceivedMessage]) -> None:
        for queue in self.queues:
            shard_queue = queue == self.services.settings.shard_queue
            busy = sum(m.queue == queue for m in running.values())
            room = (self.workers if shard_queue else 1) - busy
            if room > 0:
                for message in self.queue.receive(queue, room):
                    running[pool.submit(self.deliver, message)] = message

    def _settle(self, message: ReceivedMessage, future: Future[None]) -> None:
        error = future.exception()
        try:
            if error is None and message.queue == self.services.settings.request_queue and \
                    (refused := refusal(self.services, message.message_id)):
                self.queue.dead_letter(message, refused["reason"], refused["description"])  # as Service Bus would
            elif error is None:
                self.queue.complete(message)
            else:
                cause = f"{type(error).__name__}: {error}"
                log.warning("%s message %s failed (delivery %d): %s", message.queue, message.message_id,
                            message.delivery_count, cause)
                self._last_error[(message.queue, message.message_id)] = cause
                self.queue.abandon(message)
        except LockLost:
            log.warning("%s message %s: lock lost before it was settled", message.queue, message.message_id)

    def _renew(self, running: dict[Future[None], ReceivedMessage]) -> None:
        for future, message in list(running.items()):
            try:
                running[future] = self.queue.renew_lock(message)
            except LockLost:
                log.warning("%s message %s: lock lost while it ran", message.queue, message.message_id)

    def close(self) -> None:
        services.install(None)
        self.queue.close()


def service_bus_message(body: Mapping[str, Any], message_id: str, delivery_count: int, *,
                        dead_letter: tuple[str, str] | None = None,
                        properties: Mapping[str, str] | None = None) -> ServiceBusMessage:
    """A queue message as the Functions SDK hands it to a Service Bus trigger."""
    reason, description = dead_letter or (None, None)
    return ServiceBusMessage(body=json.dumps(body).encode("utf-8"), content_type="application/json",
                             message_id=message_id, delivery_count=delivery_count, dead_letter_reason=reason,
                             dead_letter_error_description=description, application_properties=dict(properties or {}),
                             user_properties={})


def event_grid_event(event: Mapping[str, Any]) -> func.EventGridEvent:
    """An Event Grid event dict (as AzureML sends it) as the Functions SDK hands it to a trigger."""
    when = event.get("eventTime")
    return func.EventGridEvent(
        id=str(event["id"]), data=dict(event.get("data") or {}), topic=str(event.get("topic", "")),
        subject=str(event.get("subject", "")), event_type=str(event.get("eventType", "")),
        event_time=datetime.fromisoformat(when) if when else datetime.now(UTC),
        data_version=str(event.get("dataVersion", "")),
    )
