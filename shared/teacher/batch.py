"""Batch mode: a shard's teacher requests go through the provider's Batch API instead of one call at a time.

Per shard, in rounds: the requests not yet answered go into one JSONL file (`custom_id` = the request's cache key),
uploaded with purpose "batch" and submitted to `POST /batches`; the batch id is kept in the job record
(`batches.<shard>`), so a restarted job, or the shard message delivered again, polls the same batch instead of paying
for a new one. The shard message comes back, scheduled, every `batch.poll_seconds` until the batch ends. Its output
lines go into the response cache, from which the ordinary labelling then reads every reply. Requests the batch did not
answer (an error line, no line, an expired batch) go into the next round; after `batch.max_rounds` their rows are
rejected with the batch's error.

Not verified against a real provider here (no network): the request shape follows the OpenAI Batch API
(`/v1/chat/completions` lines) and Azure OpenAI's (`/chat/completions`, the deployment as model).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from shared.jobs.blobs import dumps, read_json
from shared.jobs.paths import JobPaths
from shared.jobs.record import read_record, update_record
from shared.manifest.model import Manifest, TeacherKind
from shared.prompts import teacher_conversations
from shared.rows import Row
from shared.teacher.cache import ResponseCache, cache_key
from shared.teacher.replies import TeacherReply, Usage

if TYPE_CHECKING:
    import openai

    from shared.teacher.client import TeacherClient

TERMINAL = frozenset({"completed", "failed", "expired", "cancelled"})


@dataclass(frozen=True, slots=True)
class BatchStep:
    """What a shard's batch needs next: a look at `wait_until` (epoch seconds), or nothing more (None), with
    the requests that will get no reply (cache key → why)."""

    wait_until: float | None
    failed: dict[str, str] = field(default_factory=dict)


async def advance_batch(client: TeacherClient, cache: ResponseCache, paths: JobPaths, shard: int,
                        manifest: Manifest, rows: list[tuple[str, Row]]) -> BatchStep:
    """Move the shard's batch on by one step: collect a finished batch, submit the next round, or wait."""
    store = cache.store
    requests = {}
    for _, row in rows:
        for messages in teacher_conversations(manifest.task, row, manifest.prompt):
            body = client.request_body(messages)
            requests[cache_key(manifest.teacher, body)] = body
    api = client.openai_client()
    record = read_record(store, paths)
    state = ((record.batches if record else None) or {}).get(str(shard), {})
    errors_blob = paths.batch_errors(shard)
    errors: dict[str, str] | None = None  # the last collected batch's failures, once read or collected
    if state.get("id") and not state.get("collected"):
        batch = await api.batches.retrieve(state["id"])
        if batch.status not in TERMINAL:
            return BatchStep(time.time() + manifest.batch.poll_seconds)
        errors = await collect(api, batch, cache, batch_origin(paths.job))
        store.write(errors_blob, dumps(errors))
        update_record(store, paths, lambda r: r.set_batch(shard, {**state, "collected": True, "status": batch.status}))
    pending = [key for key in requests if cache.get(key) is None]
    if not pending:
        return BatchStep(None)
    rounds = int(state.get("round", 0))
    if rounds >= manifest.batch.max_rounds:
        if errors is None:
            errors = read_json(store, errors_blob) or {}
        default = errors.get("*", f"no reply in {rounds} batches")
        return BatchStep(None, {key: errors.get(key, default) for key in pending})
    url = "/chat/completions" if manifest.teacher.kind is TeacherKind.AZURE_OPENAI else "/v1/chat/completions"
    lines = [json.dumps({"custom_id": key, "method": "POST", "url": url, "body": requests[key]}, ensure_ascii=False)
             for key in pending]
    name = f"{paths.job}-{shard:05d}-{rounds + 1}.jsonl"
    upload = await api.files.create(file=(name, "\n".join(lines).encode("utf-8")), purpose="batch")
    batch = await api.batches.create(input_file_id=upload.id, endpoint=url,  # type: ignore[arg-type]
                                     completion_window=manifest.batch.completion_window,  # type: ignore[arg-type]
                                     metadata={"distill_job": paths.job, "shard": str(shard),
                                               "round": str(rounds + 1)})
    new_state = {"id": batch.id, "round": rounds + 1, "requests": len(pending), "collected": False}
    update_record(store, paths, lambda r: r.set_batch(shard, new_state))
    return BatchStep(time.time() + manifest.batch.poll_seconds)


def batch_origin(job: str) -> str:
    """How a job's batch replies are marked in the cache: the job paid for them; later jobs read them free."""
    return f"batch:{job}"


async def collect(api: openai.AsyncOpenAI, batch: Any, cache: ResponseCache, origin: str) -> dict[str, str]:
    """Put every answered line of a finished batch into the cache; returns the failed ones (cache key → why)."""
    errors: dict[str, str] = {}
    for file_id in (batch.output_file_id, batch.error_file_id):
        if not file_id:
            continue
        content = await api.files.content(file_id)
        for line in content.text.splitlines():
            if line.strip():
                key, reply, error = parse_line(json.loads(line))
                if reply is not None:
                    cache.put(key, reply, origin)
                else:
                    errors[key] = error
    if batch.status != "completed":
        errors.setdefault("*", f"batch {batch.id} {batch.status}")
    return errors


def parse_line(item: dict[str, Any]) -> tuple[str, TeacherReply | None, str]:
    """(cache key, the reply when the line holds a chat completion, else why not)."""
    key = str(item.get("custom_id"))
    response = item.get("response") or {}
    body = response.get("body") or {}
    status = response.get("status_code")
    if status != 200 or not body.get("choices"):
        error = item.get("error") or body.get("error") or {}
        message = error.get("message") if isinstance(error, dict) else str(error)
        return key, None, f"batch line HTTP {status}: {message or 'no reply'}"[:200]
    choice = body["choices"][0]
    usage = body.get("usage") or {}
    reply = TeacherReply((choice.get("message") or {}).get("content"), choice.get("finish_reason"),
                         Usage(int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)),
                         attempts=1, latency_s=0.0)
    return key, reply, ""
