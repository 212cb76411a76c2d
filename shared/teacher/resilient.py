"""Retries and rate limiting around any teacher adapter: one call is as many attempts as the retry policy and the
endpoint's rate limit need.

A 429 under a rate limiter is paced, not a retry spent: the limiter holds every caller of the job back and slows its
pace, and the call waits its turn (up to MAX_PACED_429S times). Other retryable failures (timeouts, resets, 5xx)
wait by the retry policy's backoff; a refusal (400, 401, 403, 404, 422) fails at once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import replace

from shared.ports import Teacher
from shared.teacher.ratelimit import (
    CHARS_PER_TOKEN,
    RATE_LIMIT,
    RESERVE_AHEAD,
    RateLimiter,
    TooEarly,
    estimate_tokens,
    message_chars,
)
from shared.teacher.replies import TeacherCallFailed, TeacherReply, Usage
from shared.teacher.retry import RetryPolicy

MAX_PACED_429S = 20  # 429s a paced call rides out (behind the rate limiter) before its retries count them
WAIT_NOTICE = 5.0  # seconds: a wait this long is told (the progress line shows it)
TEMPLATE_TOKENS = 1024  # the most tokens a chat template may add to a prompt beyond one per character


class ResilientTeacher:
    """Calls one teacher: `async with teacher: await teacher.complete(messages)`."""

    def __init__(self, adapter: Teacher, *, retry: RetryPolicy, max_tokens: int | None,
                 limiter: RateLimiter | None = None, max_wait: float | None = None,
                 on_wait: Callable[[float, str], None] | None = None) -> None:
        self.adapter = adapter
        self._on_wait = on_wait  # told of every wait of WAIT_NOTICE seconds or more (seconds, why)
        self._retry = retry
        self._max_tokens = max_tokens  # the completion allowance the limiter reserves tokens for
        self._limiter = limiter  # paces every attempt; raises Throttled when the wait would exceed max_wait
        self._max_wait = max_wait
        self.throttled = 0  # 429 responses received, retried ones included

    def __repr__(self) -> str:
        return f"ResilientTeacher({self.adapter!r})"

    async def __aenter__(self) -> ResilientTeacher:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.adapter.aclose()

    @property
    def limiter(self) -> RateLimiter | None:
        """The rate limiter pacing these calls (shared by the job's workers in this process), if any."""
        return self._limiter

    @property
    def endpoint(self) -> str:
        return self.adapter.endpoint

    @property
    def auth_header(self) -> str | None:
        return self.adapter.auth_header

    def request_body(self, messages: list[dict]) -> dict:
        return self.adapter.request_body(messages)

    async def complete(self, messages: list[dict]) -> TeacherReply:
        """One chat completion, retried per the policy. Raises TeacherCallFailed or TeacherConfigError, and
        shared.teacher.ratelimit.Throttled when the rate limiter would make it wait longer than `max_wait`."""
        return await self._call(messages, self.adapter.request_body(messages))

    async def complete_choices(self, messages: list[dict], n: int, first: int = 0) -> list[TeacherReply]:
        """`n` answers to one question, asked for with the API's `n`. A server that gives fewer (many do not honour
        `n`) is asked for the rest one call at a time, each with its own seed (the request's seed plus the answer's
        number, counted from `first`, the number of answers already had), so sampling gives other answers."""
        body = self.adapter.request_body(messages)
        replies = (await self._call(messages, {**body, "n": n} if n > 1 else body)).choices()
        seed = (body.get("seed") or 0) + first
        while len(replies) < n:
            replies.append(await self._call(messages, {**body, "seed": seed + len(replies)}))
        return replies[:n]

    async def _call(self, messages: list[dict], body: dict) -> TeacherReply:
        limiter = self._limiter
        estimate = limiter.estimate(messages, self._max_tokens) if limiter else None
        started = time.monotonic()
        attempts = paced_429s = 0
        while True:
            attempts += 1
            if limiter and estimate:
                await self._take_turn(limiter, estimate.total)
            sent = limiter.now() if limiter else None
            result = await self.adapter.attempt(body)
            if isinstance(result, TeacherReply):
                result = trusted_usage(result, messages, body.get("max_tokens"))
                if limiter and estimate:
                    limiter.settled(estimate, result.usage.prompt_tokens, result.usage.total, result.rate_limits, sent)
                return replace(result, attempts=attempts, latency_s=time.monotonic() - started)
            self.throttled += result.status == 429
            if limiter and estimate and result.status == 429 and paced_429s < MAX_PACED_429S:
                paced_429s += 1  # not a retry spent: the limiter holds every caller back and slows the pace
                limiter.rate_limited(result.headers, estimate.total, sent)
                continue
            if not result.retryable or attempts - paced_429s > self._retry.max_retries:
                raise TeacherCallFailed(result.reason, result.detail, attempts=attempts, status=result.status)
            await self._wait(self._retry.delay(attempts - 1, result.headers), f"a retry after {result.reason}")

    async def _take_turn(self, limiter: RateLimiter, tokens: int) -> None:
        """Wait for the call's turn at the limiter's pace, asking again every RESERVE_AHEAD seconds while it is far."""
        while True:
            try:
                wait = limiter.reserve(tokens, max_wait=self._max_wait, ahead=RESERVE_AHEAD)
            except TooEarly as early:
                await self._wait(early.seconds, RATE_LIMIT, shown=early.due)
                continue
            return await self._wait(wait, RATE_LIMIT)

    async def _wait(self, seconds: float, why: str, shown: float | None = None) -> None:
        """Sleep `seconds`; a wait of WAIT_NOTICE or more (`shown`, when the whole wait is longer) is told."""
        told = shown if shown is not None else seconds
        if told >= WAIT_NOTICE and self._on_wait:
            self._on_wait(told, why)
        if seconds > 0:
            await asyncio.sleep(seconds)


def trusted_usage(reply: TeacherReply, messages: list[dict], max_tokens: int | None) -> TeacherReply:
    """The reply with the token counts it reports where they are plausible, else estimates (characters / 4): a
    teacher that reports none, negative or absurd counts can neither spend past a budget nor skew the pace.

    Plausible: a prompt has at least one token and at most one per character plus a chat template's; a completion
    has at most `max_tokens` per choice, and at least one token when it has text."""
    prompt_chars = message_chars(messages)
    texts = [reply.content, *(content for content, _ in reply.others)]
    completion_chars = sum(len(text or "") for text in texts)
    most = max_tokens * len(texts) if max_tokens else completion_chars + TEMPLATE_TOKENS
    prompt, completion = reply.usage.prompt_tokens, reply.usage.completion_tokens
    if not 0 < prompt <= prompt_chars + TEMPLATE_TOKENS:
        prompt = estimate_tokens(messages, None)
    least = 1 if completion_chars else 0
    if not least <= completion <= most:
        completion = min(most, completion_chars // CHARS_PER_TOKEN + 1)
    usage = Usage(prompt, completion)
    return reply if usage == reply.usage else replace(reply, usage=usage)
