"""The teacher client: one chat completion per call, retried by our own policy, on the `openai` package.

The openai client is built on the first `complete`, so `request_body` and `endpoint` (used by
`distill preview`) need no credentials. A key is read from the setting named by `key_setting` at that
moment and lives only inside the openai client: it is never logged, never put in an error, never in `repr`.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import openai
from openai.types.chat import ChatCompletion

from shared import tracing
from shared.manifest.model import InferenceParameters, TeacherAuth, TeacherKind, TeacherSettings
from shared.reasons import Reason
from shared.teacher.ratelimit import RateLimiter
from shared.teacher.replies import TeacherCallFailed, TeacherReply, Usage
from shared.teacher.retry import RetryPolicy

COGNITIVE_SERVICES_SCOPE = "https://cognitiveservices.azure.com/.default"
AZURE_ML_SCOPE = "https://ml.azure.com/.default"
NO_KEY = "unused"  # openai needs some api_key; endpoints without auth ignore it
DETAIL_CHARS = 200
MAX_PACED_429S = 20  # 429s a paced call rides out (behind the rate limiter) before its retries count them


class TeacherConfigError(ValueError):
    """The teacher cannot be called as configured (no URL, unset key setting, no Entra token)."""


@dataclass(frozen=True, slots=True)
class _Failure:
    """One failed attempt, classified."""

    reason: Reason
    detail: str
    status: int | None
    retryable: bool
    headers: Mapping[str, str] | None = None


class TeacherClient:
    """Calls one teacher: `async with TeacherClient(settings, inference) as t: await t.complete(messages)`."""

    def __init__(self, settings: TeacherSettings, inference: InferenceParameters, *,
                 retry: RetryPolicy | None = None, environ: Mapping[str, str] = os.environ,
                 base_url: str | None = None, limiter: RateLimiter | None = None,
                 max_wait: float | None = None) -> None:
        url = base_url or settings.url
        if not url:
            raise TeacherConfigError("teacher.url is not set and no base URL was given")
        self._settings = settings
        self._inference = inference
        self._retry = retry or RetryPolicy(max_retries=settings.max_retries)
        self._environ = environ
        self._url = url.rstrip("/")
        self._client: openai.AsyncOpenAI | None = None
        self._credential: Any = None  # azure.identity.DefaultAzureCredential, when auth is entra
        self.throttled = 0  # 429 responses received, retried ones included
        self._limiter = limiter  # paces every attempt; raises Throttled when the wait would exceed max_wait
        self._max_wait = max_wait

    def __repr__(self) -> str:
        kind, auth = self._settings.kind.value, self._settings.effective_auth.value
        return f"TeacherClient(kind={kind}, endpoint={self.endpoint!r}, auth={auth})"

    async def __aenter__(self) -> TeacherClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    @property
    def endpoint(self) -> str:
        """The URL the request body is POSTed to."""
        s = self._settings
        if s.kind is TeacherKind.AZURE_OPENAI:
            return f"{self._url}/openai/deployments/{s.model}/chat/completions?api-version={s.api_version}"
        return f"{self._base_url()}/chat/completions"

    @property
    def auth_header(self) -> str | None:
        """The credential header sent, its value replaced by a placeholder (for `distill preview`)."""
        s = self._settings
        auth = s.effective_auth
        if auth is TeacherAuth.KEY:
            header = "api-key:" if s.kind is TeacherKind.AZURE_OPENAI else "Authorization: Bearer"
            return f"{header} <value of ${s.key_setting}>"
        if auth is TeacherAuth.ENTRA:
            scope = COGNITIVE_SERVICES_SCOPE if s.kind is TeacherKind.AZURE_OPENAI else AZURE_ML_SCOPE
            return f"Authorization: Bearer <Entra ID token for {scope}>"
        return None

    def request_body(self, messages: list[dict]) -> dict:
        """The exact JSON body sent for these messages: no secrets, no network."""
        p = self._inference
        body: dict[str, Any] = {
            "model": self._settings.model,
            "messages": [dict(m) for m in messages],
            "temperature": p.temperature,
            "top_p": p.top_p,
            "max_tokens": p.max_tokens,
        }
        if p.stop is not None:
            body["stop"] = list(p.stop)
        if p.seed is not None:
            body["seed"] = p.seed
        if p.frequency_penalty:
            body["frequency_penalty"] = p.frequency_penalty
        if p.presence_penalty:
            body["presence_penalty"] = p.presence_penalty
        return body

    async def complete(self, messages: list[dict]) -> TeacherReply:
        """One chat completion, retried per the policy. Raises TeacherCallFailed or TeacherConfigError, and
        shared.teacher.ratelimit.Throttled when the rate limiter would make it wait longer than `max_wait`."""
        client = self._ensure_client()
        body = self.request_body(messages)
        limiter = self._limiter
        estimate = limiter.estimate(messages, self._inference.max_tokens) if limiter else None
        started = time.monotonic()
        attempts = paced_429s = 0
        while True:
            attempts += 1
            if limiter and estimate:
                await limiter.acquire(estimate.total, max_wait=self._max_wait)
            result = await self._attempt(client, body)
            if isinstance(result, TeacherReply):
                if limiter and estimate:
                    limiter.settled(estimate, result.usage.prompt_tokens, result.usage.total, result.rate_limits)
                return replace(result, attempts=attempts, latency_s=time.monotonic() - started)
            if limiter and estimate and result.status == 429 and paced_429s < MAX_PACED_429S:
                paced_429s += 1  # not a retry spent: the limiter holds every caller back and slows the pace
                limiter.rate_limited(result.headers, estimate.total)
                continue
            if not result.retryable or attempts - paced_429s > self._retry.max_retries:
                raise TeacherCallFailed(result.reason, result.detail, attempts=attempts, status=result.status)
            await asyncio.sleep(self._retry.delay(attempts - 1, result.headers))

    def openai_client(self) -> openai.AsyncOpenAI:
        """The underlying openai client (built on first use), for the Files and Batch APIs (shared.teacher.batch)."""
        return self._ensure_client()

    async def aclose(self) -> None:
        """Close the HTTP connections and the Azure credential, if any."""
        client, credential = self._client, self._credential
        self._client = self._credential = None
        if client is not None:
            await client.close()
        if credential is not None:
            credential.close()

    async def _attempt(self, client: openai.AsyncOpenAI, body: dict) -> TeacherReply | _Failure:
        try:
            raw = await client.chat.completions.with_raw_response.create(**body)
        except openai.APITimeoutError:
            timeout = self._settings.timeout_seconds
            return _Failure(Reason.TIMEOUT, f"no reply within {timeout:g} s", None, True)
        except openai.APIConnectionError as err:
            cause = type(err.__cause__).__name__ if err.__cause__ else "connection error"
            return _Failure(Reason.CONNECTION, f"connection failed ({cause})", None, True)
        except openai.APIStatusError as err:
            return self._status_failure(err)
        return _parse_reply(raw)

    def _status_failure(self, err: openai.APIStatusError) -> _Failure:
        status = err.status_code
        retryable = self._retry.retryable(status)
        reason = Reason.RATE_LIMITED if status == 429 else Reason.TEACHER_ERROR if retryable else Reason.REFUSED
        self.throttled += status == 429
        message = str(err.message).removeprefix(f"Error code: {status}").removeprefix(" - ")
        detail = f"HTTP {status}: {self._scrub(message)[:DETAIL_CHARS]}" if message else f"HTTP {status}"
        return _Failure(reason, detail, status, retryable, err.response.headers)

    def _scrub(self, text: str) -> str:
        """Remove the credential from text a server sent back, in case it echoed it."""
        secret = self._client.api_key if self._client is not None else ""
        return text.replace(secret, "***") if secret and secret != NO_KEY else text

    def _base_url(self) -> str:
        if self._settings.kind is TeacherKind.AZURE_AI and not self._url.endswith("/v1"):
            return f"{self._url}/v1"
        return self._url

    def _ensure_client(self) -> openai.AsyncOpenAI:
        if self._client is None:
            self._client = self._build_client()
        return self._client

    def _build_client(self) -> openai.AsyncOpenAI:
        s = self._settings
        auth = s.effective_auth
        common: dict[str, Any] = {"max_retries": 0, "timeout": s.timeout_seconds,
                                  "default_headers": tracing.http_headers()}  # the job's trace, when in one
        if s.kind is TeacherKind.AZURE_OPENAI:
            if auth is TeacherAuth.ENTRA:
                common["azure_ad_token_provider"] = self._entra_token_provider(COGNITIVE_SERVICES_SCOPE)
            else:
                common["api_key"] = self._key() if auth is TeacherAuth.KEY else NO_KEY
            return openai.AsyncAzureOpenAI(azure_endpoint=self._url, azure_deployment=s.model,
                                           api_version=s.api_version, **common)
        if auth is TeacherAuth.ENTRA:
            key: str | Callable[[], Awaitable[str]] = self._entra_token_provider(AZURE_ML_SCOPE)
        else:
            key = self._key() if auth is TeacherAuth.KEY else NO_KEY
        return openai.AsyncOpenAI(base_url=self._base_url(), api_key=key, **common)

    def _key(self) -> str:
        name = self._settings.key_setting
        value = self._environ.get(name) if name else None
        if not value:
            raise TeacherConfigError(f"teacher.key_setting names {name!r}, which is not set or is empty")
        return value

    def _entra_token_provider(self, scope: str) -> Callable[[], Awaitable[str]]:
        """An async callable giving an Entra token for `scope`; azure.identity caches and renews it.

        The synchronous credential runs in a worker thread: azure.identity.aio would need aiohttp, which
        is not a dependency.
        """
        from azure.identity import DefaultAzureCredential, get_bearer_token_provider

        self._credential = DefaultAzureCredential()
        provider = get_bearer_token_provider(self._credential, scope)

        async def token() -> str:
            try:
                return await asyncio.to_thread(provider)
            except Exception as err:  # azure.identity raises several unrelated types; none carries a secret
                raise TeacherConfigError(f"no Entra token for {scope}: {type(err).__name__}") from err

        return token


def _parse_reply(raw: Any) -> TeacherReply | _Failure:
    """The reply in a 2xx response; an unreadable body is a retryable teacher error."""
    try:
        completion = raw.parse()
        if not isinstance(completion, ChatCompletion):
            raise TypeError("not a chat completion")
        choice = completion.choices[0] if completion.choices else None
        content = choice.message.content if choice else None
        finish_reason = choice.finish_reason if choice else None
        usage = completion.usage
    except (ValueError, TypeError, AttributeError, openai.APIResponseValidationError) as err:
        detail = f"unreadable response ({type(err).__name__})"
        return _Failure(Reason.TEACHER_ERROR, detail, raw.status_code, True)
    return TeacherReply(
        content=content,
        finish_reason=finish_reason,
        usage=Usage(usage.prompt_tokens or 0, usage.completion_tokens or 0) if usage else Usage(),
        attempts=0,  # set by complete
        latency_s=0.0,
        rate_limits=_rate_limit_headers(raw.headers),
    )


def _rate_limit_headers(headers: Mapping[str, str]) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items()
            if k.lower().startswith("x-ratelimit-") or k.lower() in ("retry-after", "retry-after-ms")}
