"""The adapter for any endpoint speaking OpenAI's chat completions at a base URL (OpenAI, vLLM, ...), on the `openai`
package; the other adapters build on it.

The openai client is built on the first attempt, so `request_body`, `endpoint` and `auth_header` (used by
`distill preview`) need no credentials. A key is read from the setting named by `key_setting` at that moment and
lives only inside the openai client: it is never logged, never put in a failure's detail, never in `repr`.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from typing import Any

import openai
from openai.types.chat import ChatCompletion

from shared import tracing
from shared.manifest.endpoints import base_url_of
from shared.manifest.model import InferenceParameters, TeacherAuth, TeacherSettings
from shared.reasons import Reason
from shared.redaction import redact, remember
from shared.teacher.replies import Failure, TeacherConfigError, TeacherReply, Usage
from shared.teacher.retry import RetryPolicy

AZURE_ML_SCOPE = "https://ml.azure.com/.default"
NO_KEY = "unused"  # openai needs some api_key; endpoints without auth ignore it
DETAIL_CHARS = 200
MAX_TOKENS = 32768  # the manifest's largest max_tokens, for a request that names none
REPLY_BYTES_PER_TOKEN = 32  # a token is a few characters; JSON escapes make one up to 6 bytes
REPLY_MARGIN_BYTES = 64 * 1024


class OpenAICompatibleTeacher:
    """`shared.ports.Teacher` for a URL that serves `/chat/completions`: an OpenAI-compatible server, or an Azure AI
    serverless or online endpoint (the manifest keeps the request URL, shared.manifest.endpoints)."""

    entra_scope = AZURE_ML_SCOPE  # the token audience when `auth` is entra
    key_header = "Authorization: Bearer"  # how a key is sent
    batch_url = "/v1/chat/completions"  # what a Batch API input line names

    def __init__(self, settings: TeacherSettings, inference: InferenceParameters, url: str, *,
                 environ: Mapping[str, str] = os.environ) -> None:
        self.settings = settings
        self.inference = inference
        self._url = url.rstrip("/")
        self._environ = environ
        self._client: openai.AsyncOpenAI | None = None
        self._credential: Any = None  # azure.identity.DefaultAzureCredential, when auth is entra

    def __repr__(self) -> str:
        auth = self.settings.effective_auth.value
        return f"{type(self).__name__}(endpoint={self.endpoint!r}, auth={auth})"

    @property
    def base_url(self) -> str:
        return base_url_of(self._url)

    @property
    def endpoint(self) -> str:
        return f"{self.base_url}/chat/completions"

    @property
    def auth_header(self) -> str | None:
        auth = self.settings.effective_auth
        if auth is TeacherAuth.KEY:
            return f"{self.key_header} <value of ${self.settings.key_setting}>"
        if auth is TeacherAuth.ENTRA:
            return f"Authorization: Bearer <Entra ID token for {self.entra_scope}>"
        return None

    def request_body(self, messages: list[dict]) -> dict:
        p = self.inference
        body: dict[str, Any] = {
            "model": self.settings.model,
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

    async def attempt(self, body: dict) -> TeacherReply | Failure:
        """One request. `timeout_seconds` bounds the whole of it, however slowly the server sends; a reply larger
        than `max_tokens` could make (reply_cap) is refused without reading the rest."""
        client = self.openai_client()
        timeout = self.settings.timeout_seconds
        cap = reply_cap(body)
        try:
            async with asyncio.timeout(timeout), \
                    client.chat.completions.with_streaming_response.create(**body) as response:
                data = await _read_capped(response, cap)
        except (TimeoutError, openai.APITimeoutError):
            return Failure(Reason.TIMEOUT, f"no whole reply within {timeout:g} s", None, True)
        except openai.APIConnectionError as err:
            cause = type(err.__cause__).__name__ if err.__cause__ else "connection error"
            return Failure(Reason.CONNECTION, f"connection failed ({cause})", None, True)
        except openai.APIStatusError as err:
            return self._status_failure(err)
        if data is None:
            return Failure(Reason.OVERSIZED, f"the reply was over {cap:,} bytes, more than max_tokens "
                           f"{body.get('max_tokens')} can make", response.status_code, False)
        return self._scrubbed(_parse_reply(data, response.status_code, response.headers))

    def openai_client(self) -> openai.AsyncOpenAI:
        """The underlying openai client, built on first use (also for the Files and Batch APIs)."""
        if self._client is None:
            self._client = self._build_client(self._common_options())
        return self._client

    async def aclose(self) -> None:
        client, credential = self._client, self._credential
        self._client = self._credential = None
        if client is not None:
            await client.close()
        if credential is not None:
            credential.close()

    def _build_client(self, common: dict[str, Any]) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(base_url=self.base_url, api_key=self._credentials(), **common)

    def _common_options(self) -> dict[str, Any]:
        return {"max_retries": 0, "timeout": self.settings.timeout_seconds,
                "default_headers": tracing.http_headers()}  # the job's trace, when in one

    def _credentials(self) -> str | Callable[[], Awaitable[str]]:
        """The key, an Entra token provider, or a placeholder, as `auth` says."""
        auth = self.settings.effective_auth
        if auth is TeacherAuth.ENTRA:
            return self._entra_token_provider()
        return self._key() if auth is TeacherAuth.KEY else NO_KEY

    def _status_failure(self, err: openai.APIStatusError) -> Failure:
        status = err.status_code
        retryable = RetryPolicy.retryable(status)
        reason = Reason.RATE_LIMITED if status == 429 else Reason.TEACHER_ERROR if retryable else Reason.REFUSED
        message = str(err.message).removeprefix(f"Error code: {status}").removeprefix(" - ")
        detail = f"HTTP {status}: {self._scrub(message)[:DETAIL_CHARS]}" if message else f"HTTP {status}"
        return Failure(reason, detail, status, retryable, err.response.headers)

    @staticmethod
    def _scrub(text: str) -> str:
        """Remove the credential (and every other configured secret) from text a server sent back, in case it
        echoed it."""
        return redact(text)

    def _scrubbed(self, reply: TeacherReply | Failure) -> TeacherReply | Failure:
        """A reply without the credential in its text: what a server echoes must not reach a result, a rejection
        report or the cache."""
        if not isinstance(reply, TeacherReply):
            return reply
        others = tuple((self._scrub(text) if text else text, finish) for text, finish in reply.others)
        content = self._scrub(reply.content) if reply.content else reply.content
        return replace(reply, content=content, others=others)

    def _key(self) -> str:
        name = self.settings.key_setting
        value = self._environ.get(name) if name else None
        if not value:
            raise TeacherConfigError(f"the teacher's key is read from {name!r} (--teacher-key-env or "
                                     "teacher.key_setting), which is not set or is empty: set it in the environment, "
                                     "or as an app setting of the deployed app")
        remember(value)
        return value

    def _entra_token_provider(self) -> Callable[[], Awaitable[str]]:
        """An async callable giving an Entra token for the scope; azure.identity caches and renews it.

        The synchronous credential runs in a worker thread: azure.identity.aio would need aiohttp, which
        is not a dependency.
        """
        from azure.identity import DefaultAzureCredential, get_bearer_token_provider

        scope = self.entra_scope
        self._credential = DefaultAzureCredential()
        provider = get_bearer_token_provider(self._credential, scope)

        async def token() -> str:
            try:
                return await asyncio.to_thread(provider)
            except Exception as err:  # azure.identity raises several unrelated types; none carries a secret
                raise TeacherConfigError(f"no Entra token for {scope}: {type(err).__name__}") from err

        return token


def reply_cap(body: dict) -> int:
    """The most bytes a reply to `body` may have: REPLY_BYTES_PER_TOKEN per token `max_tokens` allows for each
    choice, plus REPLY_MARGIN_BYTES for the envelope."""
    tokens = int(body.get("max_tokens") or MAX_TOKENS) * int(body.get("n") or 1)
    return REPLY_MARGIN_BYTES + REPLY_BYTES_PER_TOKEN * tokens


async def _read_capped(response: Any, cap: int) -> bytes | None:
    """The response body, or None as soon as it grows past `cap` bytes."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.iter_bytes():
        size += len(chunk)
        if size > cap:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _parse_reply(data: bytes, status: int, headers: Mapping[str, str]) -> TeacherReply | Failure:
    """The reply in a 2xx response's body (read as leniently as the openai client reads it); an unreadable body is a
    retryable teacher error."""
    try:
        completion = ChatCompletion.construct(**json.loads(data))
        choices = list(completion.choices or [])
        content = choices[0].message.content if choices else None
        finish_reason = choices[0].finish_reason if choices else None
        others = tuple((c.message.content, c.finish_reason) for c in choices[1:])
        usage = completion.usage
        prompt_tokens, completion_tokens = (usage.prompt_tokens, usage.completion_tokens) if usage else (0, 0)
        counts = Usage(int(prompt_tokens or 0), int(completion_tokens or 0))
        if not isinstance(content, str | None) or not isinstance(finish_reason, str | None):
            raise TypeError("not a chat completion")
    except (ValueError, TypeError, AttributeError) as err:
        return Failure(Reason.TEACHER_ERROR, f"unreadable response ({type(err).__name__})", status, True)
    return TeacherReply(
        content=content,
        finish_reason=finish_reason,
        usage=counts,
        attempts=1,  # the resilient wrapper counts every attempt of a call
        latency_s=0.0,
        rate_limits=_rate_limit_headers(headers),
        others=others,
    )


def _rate_limit_headers(headers: Mapping[str, str]) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items()
            if k.lower().startswith("x-ratelimit-") or k.lower() in ("retry-after", "retry-after-ms")}
