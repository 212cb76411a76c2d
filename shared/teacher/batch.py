"""Provider batch mode: a shard's teacher requests go through the provider's Batch API instead of one call at a time.

Per shard, in rounds: the requests not yet answered go into one JSONL file (`custom_id` = the request's cache key),
uploaded with purpose "batch" and submitted to `POST /batches`. The caller keeps the shard's batch state that each
step returns (the pipeline keeps it in the job record), so a restarted job, or the shard message delivered again,
polls the same batch instead of paying for a new one; until the batch ends, the step says when to look again. Its
output lines go into the response cache, from which the ordinary labelling then reads every reply. Requests the batch
did not answer (an error line, no line, an expired batch) go into the next round; after `batch.max_rounds`, they are
failed with the batch's error.

Not verified against a real provider here (no network): the request shape follows the OpenAI Batch API
(`/v1/chat/completions` lines) and Azure OpenAI's (`/chat/completions`, the deployment as model).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from shared.manifest.model import BatchSettings
from shared.teacher.cache import ResponseCache
from shared.teacher.replies import TeacherReply, Usage

if TYPE_CHECKING:
    import openai

    from shared.teacher.openai_compatible import OpenAICompatibleTeacher

TERMINAL = frozenset({"completed", "failed", "expired", "cancelled"})
LOOKBACK = 100  # the provider's most recent batches searched for one a crashed step submitted


@dataclass(frozen=True, slots=True)
class BatchStep:
    """Where a shard's batch stands after one step: look again at `wait_until` (epoch seconds), or go on labelling
    (None), with the requests that will get no reply (cache key → why). `state` is the shard's batch to keep;
    `errors` the failures of a batch collected in this step, to keep for a later round (None: none collected)."""

    wait_until: float | None
    state: dict[str, Any]
    failed: dict[str, str] = field(default_factory=dict)
    errors: dict[str, str] | None = None


async def advance_batch(teacher: OpenAICompatibleTeacher, cache: ResponseCache, requests: Mapping[str, dict],
                        state: dict[str, Any], kept_errors: Mapping[str, str], settings: BatchSettings, *,
                        name: str, origin: str, metadata: Mapping[str, str]) -> BatchStep:
    """Move a shard's batch on by one step: collect a finished batch, submit the next round, or wait.

    `requests`: cache key → request body; `state`: the shard's batch as the last step left it; `kept_errors`: the
    failures of the last batch collected; `name` names the uploaded files; `origin` marks the replies in the cache.
    """
    api = teacher.openai_client()
    errors: dict[str, str] | None = None
    if state.get("id") and not state.get("collected"):
        batch = await api.batches.retrieve(state["id"])
        if batch.status not in TERMINAL:
            return BatchStep(time.time() + settings.poll_seconds, state)
        errors = await collect(api, batch, cache, origin)
        state = {**state, "collected": True, "status": batch.status}
    pending = [key for key in requests if cache.get(key) is None]
    if not pending:
        return BatchStep(None, state, errors=errors)
    rounds = int(state.get("round", 0))
    if rounds >= settings.max_rounds:
        last = errors if errors is not None else kept_errors
        default = last.get("*", f"no reply in {rounds} batches")
        return BatchStep(None, state, {key: last.get(key, default) for key in pending}, errors)
    url = teacher.batch_url
    tagged = {**metadata, "round": str(rounds + 1)}
    batch = await submitted_before(api, tagged)  # a step cut short after submitting, before keeping the id
    if batch is None:
        lines = [json.dumps({"custom_id": key, "method": "POST", "url": url, "body": requests[key]},
                            ensure_ascii=False) for key in pending]
        upload = await api.files.create(file=(f"{name}-{rounds + 1}.jsonl", "\n".join(lines).encode("utf-8")),
                                        purpose="batch")
        batch = await api.batches.create(input_file_id=upload.id, endpoint=url,  # type: ignore[arg-type]
                                         completion_window=settings.completion_window,  # type: ignore[arg-type]
                                         metadata=tagged)
    state = {"id": batch.id, "round": rounds + 1, "requests": len(pending), "collected": False}
    return BatchStep(time.time() + settings.poll_seconds, state, errors=errors)


async def submitted_before(api: openai.AsyncOpenAI, metadata: Mapping[str, str]) -> Any | None:
    """The batch already submitted under exactly this metadata (job, attempt, shard, round) and not failed, among the
    provider's LOOKBACK most recent: a crash between submitting a batch and keeping its id does not pay twice."""
    page = await api.batches.list(limit=LOOKBACK)
    return next((batch for batch in page.data if (batch.metadata or {}) == dict(metadata)
                 and batch.status not in ("failed", "expired", "cancelled")), None)


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
