"""When to retry a teacher call, and how long to wait before the next attempt."""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

RETRYABLE_STATUSES = frozenset({408, 409, 429})
# The longest server hint (Retry-After) honoured: a longer one (a quota that resets tomorrow) would freeze a job
# without a word; after this wait the call asks again, and its retries run out if the server still refuses.
MAX_RETRY_HINT = 120.0


@dataclass(frozen=True)
class RetryPolicy:
    """Retries with exponential backoff and full jitter, honouring the server's retry hints.

    `max_retries` counts retries, so a call makes at most `max_retries + 1` attempts.
    """

    max_retries: int = 4
    base_delay: float = 1.0
    max_delay: float = 60.0
    max_retry_after: float = MAX_RETRY_HINT

    def delay(self, attempt: int, headers: Mapping[str, str] | None = None,
              rng: random.Random | None = None) -> float:
        """Seconds to wait before retry number `attempt` (0 for the first retry).

        A `retry-after-ms` or `Retry-After` header (seconds or an HTTP date) wins, capped at
        `max_retry_after`. Otherwise: uniform(0, min(max_delay, base_delay * 2**attempt)), but at least
        base_delay / 2, so a burst of failed calls never comes straight back all at once.
        """
        hint = retry_hint(headers)
        if hint is not None:
            return min(hint, self.max_retry_after)
        ceiling = min(self.max_delay, self.base_delay * 2.0 ** attempt)
        floor = min(self.base_delay / 2, ceiling)
        return max(floor, (rng or random).uniform(0, ceiling))

    @staticmethod
    def retryable(status: int | None) -> bool:
        """True for 408, 409, 429, 5xx, and for connection errors and timeouts (no status)."""
        return status is None or status in RETRYABLE_STATUSES or status >= 500


def retry_hint(headers: Mapping[str, str] | None) -> float | None:
    """The wait the server asks for, in seconds (0 to MAX_RETRY_HINT), or None when it gives no usable hint."""
    if not headers:
        return None
    lower = {k.lower(): v for k, v in headers.items()}
    millis = _number(lower.get("retry-after-ms"))
    value = lower.get("retry-after")
    if millis is not None:
        seconds: float | None = millis / 1000
    elif value is None:
        return None
    else:
        seconds = _number(value)
        if seconds is None:
            seconds = _seconds_until(value)
    return None if seconds is None else min(MAX_RETRY_HINT, max(0.0, seconds))


def _number(value: str | None) -> float | None:
    """A finite number, or None for a missing or unparseable value."""
    if value is None:
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _seconds_until(http_date: str) -> float | None:
    try:
        when = parsedate_to_datetime(http_date)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())
