"""The teacher (each adapter, with retries) over real HTTP, with the real openai client, against the fake teacher."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any, ClassVar

import pytest

from shared.manifest.model import InferenceParameters, TeacherAuth, TeacherKind, TeacherSettings
from shared.reasons import Reason
from shared.tasks import Task
from shared.teacher.azure_openai import COGNITIVE_SERVICES_SCOPE
from shared.teacher.factory import teacher_for
from shared.teacher.openai_compatible import AZURE_ML_SCOPE
from shared.teacher.replies import TeacherCallFailed, TeacherConfigError, TeacherReply
from shared.teacher.retry import RetryPolicy
from shared.testkit.teacher import FakeTeacher, Fault

FAST = RetryPolicy(base_delay=0.01)
QUESTION = "Premise: it rains. Hypothesis: the street is wet."
MESSAGES = [{"role": "system", "content": "Answer with one label."}, {"role": "user", "content": QUESTION}]
KEY_SETTING = "DISTILL_TEST_TEACHER_KEY"
FAKE_KEY = "sk-fake-0123456789"


@pytest.fixture
def fake() -> Iterator[FakeTeacher]:
    with FakeTeacher({QUESTION: "entailment"}, task=Task.NLI) as teacher:
        yield teacher


def settings(url: str, **changes: Any) -> TeacherSettings:
    defaults = {"kind": TeacherKind.OPENAI_COMPATIBLE, "url": url, "timeout_seconds": 5.0}
    return TeacherSettings(**{**defaults, **changes})


def complete(teacher_settings: TeacherSettings, *, retry: RetryPolicy = FAST,
             environ: dict[str, str] | None = None) -> TeacherReply:
    """One call through a fresh client, in its own event loop."""

    async def call() -> TeacherReply:
        client = teacher_for(teacher_settings, InferenceParameters(), retry=retry, environ=environ or {})
        async with client:
            return await client.complete(MESSAGES)

    return asyncio.run(call())


def failure(teacher_settings: TeacherSettings, **kwargs: Any) -> TeacherCallFailed:
    with pytest.raises(TeacherCallFailed) as caught:
        complete(teacher_settings, **kwargs)
    return caught.value


# --- clean calls -------------------------------------------------------------------------------------------
def test_clean_answer_records_usage_and_one_attempt(fake: FakeTeacher) -> None:
    reply = complete(settings(fake.base_url))
    assert (reply.content, reply.finish_reason, reply.attempts) == ("entailment", "stop", 1)
    assert reply.usage.prompt_tokens > 0 and reply.usage.completion_tokens > 0
    assert reply.usage.total == reply.usage.prompt_tokens + reply.usage.completion_tokens
    assert reply.latency_s > 0
    assert "x-ratelimit-remaining-requests" in reply.rate_limits
    assert fake.requests_total == 1


def test_twenty_concurrent_completes_succeed(fake: FakeTeacher) -> None:
    questions = [f"question {i}" for i in range(20)]
    fake.answers.update({q: f"answer {i}" for i, q in enumerate(questions)})

    async def call_all() -> list[TeacherReply]:
        async with teacher_for(settings(fake.base_url), InferenceParameters(), retry=FAST, environ={}) as c:
            return await asyncio.gather(*(c.complete([{"role": "user", "content": q}]) for q in questions))

    replies = asyncio.run(call_all())
    assert [r.content for r in replies] == [f"answer {i}" for i in range(20)]
    assert fake.requests_total == 20 and all(r.attempts == 1 for r in replies)


# --- retries -----------------------------------------------------------------------------------------------
def test_rate_limit_hint_is_honoured(fake: FakeTeacher) -> None:
    fake.inject(Fault.RATE_LIMIT, retry_after_ms=200)
    started = time.monotonic()
    reply = complete(settings(fake.base_url))
    assert time.monotonic() - started >= 0.2
    assert (reply.content, reply.attempts) == ("entailment", 2)
    assert fake.faults_served[Fault.RATE_LIMIT] == 1


@pytest.mark.parametrize("status", [500, 502, 503])
def test_server_error_then_success(fake: FakeTeacher, status: int) -> None:
    fake.inject(Fault.SERVER_ERROR, status=status)
    reply = complete(settings(fake.base_url))
    assert (reply.content, reply.attempts) == ("entailment", 2)


def test_reset_then_success(fake: FakeTeacher) -> None:
    fake.inject(Fault.RESET)
    assert complete(settings(fake.base_url)).attempts == 2


def test_hang_past_the_timeout_then_success(fake: FakeTeacher) -> None:
    fake.inject(Fault.HANG, seconds=3)
    started = time.monotonic()
    reply = complete(settings(fake.base_url, timeout_seconds=0.5))
    assert (reply.content, reply.attempts) == ("entailment", 2)
    assert 0.5 <= time.monotonic() - started < 3


@pytest.mark.parametrize(("fault", "params", "reason", "status"), [
    (Fault.RATE_LIMIT, {}, Reason.RATE_LIMITED, 429),
    (Fault.SERVER_ERROR, {"status": 503}, Reason.TEACHER_ERROR, 503),
    (Fault.SERVER_ERROR, {"status": 408}, Reason.TEACHER_ERROR, 408),
    (Fault.RESET, {}, Reason.CONNECTION, None),
    (Fault.HANG, {"seconds": 3}, Reason.TIMEOUT, None),
])
def test_retries_are_bounded(fake: FakeTeacher, fault: Fault, params: dict, reason: Reason,
                             status: int | None) -> None:
    fake.inject(fault, times=10, **params)
    retry = RetryPolicy(max_retries=2, base_delay=0.01)
    error = failure(settings(fake.base_url, timeout_seconds=0.3), retry=retry)
    assert (error.reason, error.attempts, error.status) == (reason, 3, status)
    assert error.usage.total == 0
    assert fake.requests_total == 3


def test_retries_default_to_the_settings_max_retries(fake: FakeTeacher) -> None:
    fake.inject(Fault.RATE_LIMIT, times=10, retry_after_ms=10)

    async def call() -> None:
        client = teacher_for(settings(fake.base_url, max_retries=1), InferenceParameters(), environ={})
        async with client:
            await client.complete(MESSAGES)

    with pytest.raises(TeacherCallFailed) as caught:
        asyncio.run(call())
    assert caught.value.attempts == 2


@pytest.mark.parametrize("status", [400, 401, 403, 404, 422])
def test_refusal_is_not_retried(fake: FakeTeacher, status: int) -> None:
    fake.inject(Fault.REFUSE, status=status)
    error = failure(settings(fake.base_url))
    assert (error.reason, error.attempts, error.status) == (Reason.REFUSED, 1, status)
    assert error.detail.startswith(f"HTTP {status}")
    assert fake.requests_total == 1


# --- credentials -------------------------------------------------------------------------------------------
def test_key_from_the_named_setting_is_sent_as_bearer_and_shown_nowhere(fake: FakeTeacher) -> None:
    keyed = settings(fake.base_url, key_setting=KEY_SETTING)
    complete(keyed, environ={KEY_SETTING: FAKE_KEY})
    assert fake.last_credential == FAKE_KEY

    fake.inject(Fault.REFUSE, status=401)
    error = failure(keyed, environ={KEY_SETTING: FAKE_KEY})
    assert FAKE_KEY not in str(error) and FAKE_KEY not in error.detail
    client = teacher_for(keyed, InferenceParameters(), environ={KEY_SETTING: FAKE_KEY})
    assert FAKE_KEY not in repr(client)


@pytest.mark.parametrize("environ", [{}, {KEY_SETTING: ""}, {"OTHER_SETTING": FAKE_KEY}])
def test_missing_key_setting_is_a_config_error_naming_the_setting(fake: FakeTeacher,
                                                                   environ: dict[str, str]) -> None:
    with pytest.raises(TeacherConfigError) as caught:
        complete(settings(fake.base_url, key_setting=KEY_SETTING), environ=environ)
    assert KEY_SETTING in str(caught.value) and FAKE_KEY not in str(caught.value)
    assert fake.requests_total == 0


def test_no_auth_sends_a_placeholder(fake: FakeTeacher) -> None:
    complete(settings(fake.base_url))
    assert fake.last_credential == "unused"


class _StubCredential:
    """Stands in for azure.identity.DefaultAzureCredential."""

    instances: ClassVar[list[_StubCredential]] = []

    def __init__(self) -> None:
        self.closed = False
        self.scopes: list[str] = []
        _StubCredential.instances.append(self)

    def close(self) -> None:
        self.closed = True


def _stub_token_provider(credential: _StubCredential, scope: str) -> Any:
    credential.scopes.append(scope)
    return lambda: "entra-token"


@pytest.mark.parametrize(("kind", "scope"), [(TeacherKind.AZURE_AI, AZURE_ML_SCOPE),
                                             (TeacherKind.AZURE_OPENAI, COGNITIVE_SERVICES_SCOPE)])
def test_entra_token_is_sent_as_bearer_and_the_credential_closed(
        fake: FakeTeacher, monkeypatch: pytest.MonkeyPatch, kind: TeacherKind, scope: str) -> None:
    import azure.identity

    monkeypatch.setattr(azure.identity, "DefaultAzureCredential", _StubCredential)
    monkeypatch.setattr(azure.identity, "get_bearer_token_provider", _stub_token_provider)
    _StubCredential.instances.clear()
    reply = complete(settings(fake.root_url, kind=kind))
    assert reply.content == "entailment"
    assert fake.last_credential == "entra-token"
    [credential] = _StubCredential.instances
    assert credential.scopes == [scope] and credential.closed


# --- what is sent, and where -------------------------------------------------------------------------------
def test_request_body_is_exact_and_needs_no_credentials(fake: FakeTeacher) -> None:
    inference = InferenceParameters(temperature=0.2, top_p=0.9, max_tokens=256, stop=["\n\n"], seed=7,
                                    frequency_penalty=0.5)
    keyed = settings(fake.base_url, model="llama-405b", key_setting=KEY_SETTING)
    client = teacher_for(keyed, inference, environ={})
    body = client.request_body(MESSAGES)
    assert body == {"model": "llama-405b", "messages": MESSAGES, "temperature": 0.2, "top_p": 0.9,
                    "max_tokens": 256, "stop": ["\n\n"], "seed": 7, "frequency_penalty": 0.5}
    plain = teacher_for(settings(fake.base_url), InferenceParameters(), environ={}).request_body(MESSAGES)
    assert plain == {"model": "teacher", "messages": MESSAGES, "temperature": 0.0, "top_p": 1.0,
                     "max_tokens": 1024}

    async def send() -> None:
        async with teacher_for(keyed, inference, retry=FAST, environ={KEY_SETTING: FAKE_KEY}) as c:
            await c.complete(MESSAGES)

    asyncio.run(send())
    assert fake.last_body == body


@pytest.mark.parametrize(("kind", "url", "expected"), [
    (TeacherKind.AZURE_OPENAI, "https://r.openai.azure.com/",
     "https://r.openai.azure.com/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21"),
    (TeacherKind.AZURE_AI, "https://m.eastus2.models.ai.azure.com",
     "https://m.eastus2.models.ai.azure.com/v1/chat/completions"),
    (TeacherKind.AZURE_AI, "https://e.westus3.inference.ml.azure.com/v1/",
     "https://e.westus3.inference.ml.azure.com/v1/chat/completions"),
    (TeacherKind.OPENAI_COMPATIBLE, "http://vllm:8000/v1", "http://vllm:8000/v1/chat/completions"),
])
def test_endpoint_per_kind(kind: TeacherKind, url: str, expected: str) -> None:
    client = teacher_for(settings(url, kind=kind, model="gpt-4o"), InferenceParameters(), environ={})
    assert client.endpoint == expected


ENTRA_HEADER = "Authorization: Bearer <Entra ID token for {}>"


@pytest.mark.parametrize(("kind", "auth", "expected"), [
    (TeacherKind.AZURE_OPENAI, TeacherAuth.KEY, f"api-key: <value of ${KEY_SETTING}>"),
    (TeacherKind.AZURE_AI, TeacherAuth.KEY, f"Authorization: Bearer <value of ${KEY_SETTING}>"),
    (TeacherKind.AZURE_OPENAI, TeacherAuth.ENTRA, ENTRA_HEADER.format(COGNITIVE_SERVICES_SCOPE)),
    (TeacherKind.AZURE_AI, TeacherAuth.ENTRA, ENTRA_HEADER.format(AZURE_ML_SCOPE)),
    (TeacherKind.OPENAI_COMPATIBLE, TeacherAuth.NONE, None),
])
def test_auth_header_is_described_without_its_value(kind: TeacherKind, auth: TeacherAuth,
                                                    expected: str | None) -> None:
    key_setting = KEY_SETTING if auth is TeacherAuth.KEY else None
    described = settings("https://x.example", kind=kind, auth=auth, key_setting=key_setting)
    client = teacher_for(described, InferenceParameters(), environ={KEY_SETTING: FAKE_KEY})
    assert client.auth_header == expected


def test_local_teacher_takes_its_url_at_run_time() -> None:
    local = TeacherSettings(kind=TeacherKind.LOCAL)
    with pytest.raises(TeacherConfigError, match="no model is served here"):
        teacher_for(local, InferenceParameters(), environ={})
    client = teacher_for(local, InferenceParameters(), environ={}, local_url="http://127.0.0.1:9/v1")
    assert client.endpoint == "http://127.0.0.1:9/v1/chat/completions"


def test_azure_openai_posts_to_the_deployment_path_with_the_api_key_header(fake: FakeTeacher) -> None:
    azure = settings(fake.root_url, kind=TeacherKind.AZURE_OPENAI, model="gpt-4o", key_setting=KEY_SETTING)
    reply = complete(azure, environ={KEY_SETTING: FAKE_KEY})
    assert reply.content == "entailment"
    assert fake.last_path == "/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21"
    assert fake.last_credential == FAKE_KEY


# --- the retry policy --------------------------------------------------------------------------------------
@pytest.mark.parametrize(("headers", "expected"), [
    ({"retry-after-ms": "250", "Retry-After": "9"}, 0.25),
    ({"Retry-After": "3"}, 3.0),
    ({"retry-after": "1000"}, 120.0),
    ({"Retry-After": "0"}, 0.0),
])
def test_retry_hints_win_and_are_capped(headers: dict[str, str], expected: float) -> None:
    assert RetryPolicy().delay(0, headers) == expected


def test_retry_after_as_an_http_date() -> None:
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    assert 25 <= RetryPolicy().delay(0, {"Retry-After": when}) <= 30


def test_backoff_is_jittered_exponential_with_a_floor() -> None:
    policy, rng = RetryPolicy(base_delay=1.0, max_delay=8.0), random.Random(1)
    for attempt in range(6):
        delays = [policy.delay(attempt, {"Retry-After": "soon"}, rng) for _ in range(200)]
        assert min(delays) >= 0.5 and max(delays) <= min(8.0, 2.0 ** attempt)
    assert max(policy.delay(5, None, rng) for _ in range(200)) > 4


@pytest.mark.parametrize(("status", "retryable"), [
    (None, True), (408, True), (409, True), (429, True), (500, True), (503, True),
    (400, False), (401, False), (403, False), (404, False), (422, False),
])
def test_retryable_statuses(status: int | None, retryable: bool) -> None:
    assert RetryPolicy.retryable(status) is retryable


# --- several answers to one question (the API's `n`) -------------------------------------------------------
def choices(fake: FakeTeacher, n: int, **inference: Any) -> list[TeacherReply]:
    async def call() -> list[TeacherReply]:
        async with teacher_for(settings(fake.base_url), InferenceParameters(**inference), retry=FAST,
                               environ={}) as teacher:
            return await teacher.complete_choices(MESSAGES, n)

    return asyncio.run(call())


def test_a_server_that_answers_one_choice_for_n_is_asked_for_the_rest_with_other_seeds(fake: FakeTeacher) -> None:
    replies = choices(fake, 3, temperature=0.7, seed=5)
    assert [r.content for r in replies] == ["entailment"] * 3
    assert fake.requests_total == 3
    assert fake.last_body is not None and fake.last_body["seed"] == 7 and "n" not in fake.last_body
    assert all(r.usage.total > 0 for r in replies)  # three calls, each paid


def test_a_server_that_honours_n_is_asked_once() -> None:
    with FakeTeacher({QUESTION: "neutral"}, task=Task.NLI, honours_n=True) as fake:
        replies = choices(fake, 3, temperature=0.7)
        assert [r.content for r in replies] == ["neutral"] * 3
        assert fake.requests_total == 1 and fake.last_body is not None and fake.last_body["n"] == 3
    assert replies[0].usage.total > 0 and replies[1].usage.total == replies[2].usage.total == 0  # paid once


def test_one_answer_asks_no_n(fake: FakeTeacher) -> None:
    [reply] = choices(fake, 1)
    assert reply.content == "entailment" and fake.last_body is not None and "n" not in fake.last_body
