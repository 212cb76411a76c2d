"""What a teacher call gives back, and how it fails: light types (no openai import) for the pipeline's handlers."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from shared.reasons import Reason


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True, slots=True)
class TeacherReply:
    """A reply as the teacher sent it; judging its content is the caller's job."""

    content: str | None
    finish_reason: str | None
    usage: Usage
    attempts: int
    latency_s: float  # wall time of the whole call, retries and waits included
    rate_limits: dict[str, str] = field(default_factory=dict)  # x-ratelimit-*, retry-after* of the last reply
    cached: bool = False  # answered from the response cache (shared.teacher.cache): nothing was paid for it
    others: tuple[tuple[str | None, str | None], ...] = ()  # (content, finish_reason) of its further choices (`n`)

    def choices(self) -> list[TeacherReply]:
        """One reply per choice it holds; the usage is counted on the first."""
        first = replace(self, others=())
        return [first, *(replace(first, content=content, finish_reason=finish, usage=Usage())
                         for content, finish in self.others)]


class TeacherCallFailed(Exception):
    """The call failed for good: retries were spent, or the endpoint refused the request."""

    def __init__(self, reason: Reason, detail: str, *, attempts: int, status: int | None = None) -> None:
        super().__init__(f"{reason.value}: {detail} (after {attempts} attempt{'s' if attempts != 1 else ''})")
        self.reason = reason
        self.detail = detail
        self.attempts = attempts
        self.status = status
        self.usage = Usage()  # failed attempts return no usage we could count


class TeacherConfigError(ValueError):
    """The teacher cannot be called as configured (no URL, unset key setting, no Entra token)."""


@dataclass(frozen=True, slots=True)
class Failure:
    """One failed attempt, classified: why, whether another attempt may succeed, and the server's headers."""

    reason: Reason
    detail: str
    status: int | None
    retryable: bool
    headers: Mapping[str, str] | None = None
