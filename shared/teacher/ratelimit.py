"""Pacing teacher calls to the endpoint's rate limits, shared by every worker of a job in one process.

Two buckets, requests and tokens, each a reservation-style token bucket (GCRA): a call reserves its share and waits
until the reservation falls due, so concurrent callers line up at the configured rate instead of racing and being
answered 429. Token use is estimated before sending (characters / 4 plus `max_tokens`) and corrected once the
teacher reports what it used. The limiter adapts to what the endpoint says:

- a 429 or a `retry-after` / `retry-after-ms` hint pauses every caller until then, and lowers the pace (AIMD: x0.8
  per burst of 429s, back up by 2% of the configured rate per successful call);
- with no configured limit, `x-ratelimit-limit-requests` / `-tokens` (OpenAI's per-minute limits) become the limits;
  without those, or when a 429 comes at a faster pace, the pace falls to the rate of the calls that succeeded in the
  last 10 s (the 429 episode's slow-down applied on top);
- `x-ratelimit-remaining-requests: 0` or fewer `x-ratelimit-remaining-tokens` than a call needs pauses callers until
  the matching `x-ratelimit-reset-*` (or one second when the endpoint gives no reset).

The limiter is thread-safe: workers running shards in threads, each with its own event loop, share one per job.
When a wait would be longer than a caller accepts (`max_wait`), it raises Throttled instead of reserving, so a
function holding a queue lock can hand the work back as a scheduled message rather than sleep on the lock.
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

from shared.teacher.retry import retry_hint

CHARS_PER_TOKEN = 4
MIN_SHARE = 0.1  # the pace never drops below this share of the configured rate
BACKOFF = 0.8
RECOVERY = 0.02
BURST_SECONDS = 1.0  # a bucket holds this many seconds of its rate (at least one call)
NO_RESET_PAUSE = 1.0
SLOWDOWN_GAP = 1.0  # 429s within this many seconds of a slow-down are one episode (calls already in flight)
LEARNED_SHARE = 0.95  # a pace learned from successes stays this far under them
LEARN_WINDOW = 10.0  # seconds of successful calls that set the pace after a first 429, when nothing else does
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


RATE_LIMIT = "the teacher's rate limit"  # the cause of a wait, as shown to the user


class Throttled(Exception):
    """Waiting for the rate limit would take longer than the caller accepts; try again at `until` (epoch seconds)."""

    def __init__(self, until: float) -> None:
        super().__init__(f"rate limited until {until:.3f}")
        self.until = until


@dataclass(frozen=True, slots=True)
class Estimate:
    """A call's estimated prompt tokens (raw characters / 4) and the total reserved for it."""

    prompt: int
    total: int


@dataclass
class _Bucket:
    """GCRA: `tat` is the theoretical arrival time of the next unit; `rate` units per second, `burst` units ahead."""

    limit: float  # configured units per second
    rate: float
    burst: float
    tat: float = 0.0

    def due(self, amount: float, now: float) -> float:
        """When a reservation of `amount` units made now may go."""
        return max(self.tat, now) + amount / self.rate - self.burst / self.rate

    def take(self, amount: float, now: float) -> None:
        self.tat = max(self.tat, now) + amount / self.rate

    def give_back(self, amount: float) -> None:
        """Correct an earlier reservation by `amount` units (negative: more was used than reserved)."""
        self.tat -= amount / self.rate

    def block_until(self, when: float) -> None:
        """Nothing before `when`, and no burst right after it."""
        self.tat = max(self.tat, when + self.burst / self.rate)

    def slow_down(self) -> None:
        self.rate = max(self.limit * MIN_SHARE, self.rate * BACKOFF)

    def recover(self) -> None:
        self.rate = min(self.limit, self.rate + self.limit * RECOVERY)


def message_chars(messages: list[dict]) -> int:
    """The characters of the messages' contents."""
    return sum(len(str(m.get("content") or "")) for m in messages)


def estimate_tokens(messages: list[dict], max_tokens: int | None) -> int:
    """A cheap upper-leaning guess of a call's tokens: characters / 4 of the messages, plus the completion allowance."""
    return message_chars(messages) // CHARS_PER_TOKEN + 4 * len(messages) + (max_tokens or 0)


class RateLimiter:
    """Paces calls to `rpm` requests and `tpm` tokens a minute (either may be None: not paced, still adaptive)."""

    def __init__(self, rpm: int | None = None, tpm: int | None = None, *,
                 clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._requests = _bucket(rpm)
        self._tokens = _bucket(tpm)
        self._paused_until = 0.0
        self._learning = (rpm is None, tpm is None)  # limits not configured: taken from the endpoint
        self._seen_limits: list[int | None] = [None, None]  # the last x-ratelimit-limit-requests / -tokens values
        self._successes: deque[float] = deque()  # when recent calls succeeded (while learning the request pace)
        self._last_slowdown = float("-inf")
        self._prompt_ratio = 1.0  # reported prompt tokens / estimated, smoothed
        self.throttled = 0  # 429s seen

    def estimate(self, messages: list[dict], max_tokens: int | None) -> Estimate:
        """The estimate, corrected by how far the teacher's reported prompt tokens were from earlier estimates."""
        prompt = estimate_tokens(messages, None)
        return Estimate(prompt, round(prompt * self._prompt_ratio) + (max_tokens or 0))

    def reserve(self, tokens: int, *, max_wait: float | None = None) -> float:
        """Reserve one request and `tokens` tokens; returns the seconds to wait before sending.

        Raises Throttled, reserving nothing, when the wait would exceed `max_wait`.
        """
        with self._lock:
            now = self._clock()
            due = self._paused_until
            if self._requests:
                due = max(due, self._requests.due(1, now))
            if self._tokens:
                due = max(due, self._tokens.due(tokens, now))
            wait = max(0.0, due - now)
            if max_wait is not None and wait > max_wait:
                raise Throttled(due)
            if self._requests:
                self._requests.take(1, max(now, due))
            if self._tokens:
                self._tokens.take(tokens, max(now, due))
            return wait

    def settled(self, estimate: Estimate, prompt_used: int, used: int, headers: Mapping[str, str]) -> None:
        """A call came back: correct the token reservation by what was used, and heed the rate-limit headers."""
        with self._lock:
            if self._tokens and used:
                self._tokens.give_back(estimate.total - used)
            if estimate.prompt and prompt_used:
                self._prompt_ratio = 0.9 * self._prompt_ratio + 0.1 * (prompt_used / estimate.prompt)
            if self._requests:
                self._requests.recover()
            if self._tokens:
                self._tokens.recover()
            lower = {k.lower(): v for k, v in headers.items()}
            self._learn_limits(lower)
            if self._learning[0]:
                now = self._clock()
                self._successes.append(now)
                while self._successes[0] < now - LEARN_WINDOW:
                    self._successes.popleft()
            self._heed_remaining(lower, estimate.total)

    def rate_limited(self, headers: Mapping[str, str] | None, estimated: int = 0) -> None:
        """A 429: pause everyone until the server's hint (or a short while) and lower the pace."""
        with self._lock:
            self.throttled += 1
            now = self._clock()
            hint = retry_hint(headers)
            pause = hint if hint is not None else NO_RESET_PAUSE
            self._learn_limits({k.lower(): v for k, v in (headers or {}).items()})
            if now - self._last_slowdown >= SLOWDOWN_GAP:
                if self._learning[0]:  # a learned pace that let a 429 through falls to what actually succeeded
                    observed = self._observed_pace(now)
                    if self._requests is None or observed.limit < self._requests.limit:
                        self._requests = observed
                self._last_slowdown = now
                for bucket in (self._requests, self._tokens):
                    if bucket:
                        bucket.slow_down()
            self._pause(now + pause)
            if self._tokens:
                self._tokens.give_back(estimated)  # the refused call used no tokens

    def _pause(self, until: float) -> None:
        self._paused_until = max(self._paused_until, until)
        for bucket in (self._requests, self._tokens):
            if bucket:
                bucket.block_until(until)

    def _learn_limits(self, lower: Mapping[str, str]) -> None:
        """Unconfigured limits follow the endpoint's `x-ratelimit-limit-*` headers (per minute, as OpenAI sends)."""
        for index, name in enumerate(("requests", "tokens")):
            limit = _int(lower.get(f"x-ratelimit-limit-{name}"))
            if not self._learning[index] or not limit or limit == self._seen_limits[index]:
                continue
            self._seen_limits[index] = limit
            if index == 0:
                self._requests = _bucket(limit)
            else:
                self._tokens = _bucket(limit)

    def _observed_pace(self, now: float) -> _Bucket:
        """A request bucket a little under the rate calls succeeded since the last 429 episode (within 10 s), so
        the endpoint's own bucket, drained by then, fills up again; at least one call a second."""
        start = max(now - LEARN_WINDOW, self._last_slowdown)
        recent = [t for t in self._successes if t >= start]
        span = max(1.0, now - (recent[0] if recent else start))
        rate = max(1.0, LEARNED_SHARE * len(recent) / span)
        return _Bucket(limit=rate, rate=rate, burst=max(1.0, rate * BURST_SECONDS), tat=now)

    def _heed_remaining(self, lower: Mapping[str, str], estimated: int) -> None:
        now = self._clock()
        requests_left = _int(lower.get("x-ratelimit-remaining-requests"))
        if requests_left == 0:
            self._pause(now + (_duration(lower.get("x-ratelimit-reset-requests")) or NO_RESET_PAUSE))
        tokens_left = _int(lower.get("x-ratelimit-remaining-tokens"))
        if tokens_left is not None and tokens_left < estimated:
            self._pause(now + (_duration(lower.get("x-ratelimit-reset-tokens")) or NO_RESET_PAUSE))


def _bucket(per_minute: int | None) -> _Bucket | None:
    if not per_minute:
        return None
    rate = per_minute / 60.0
    return _Bucket(limit=rate, rate=rate, burst=max(1.0, rate * BURST_SECONDS))


def _int(value: str | None) -> int | None:
    try:
        return int(float(value)) if value is not None else None
    except ValueError:
        return None


def _duration(value: str | None) -> float | None:
    """OpenAI's reset durations ("1s", "6m0s", "20ms") or plain seconds; None when absent or unreadable."""
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    parts = _DURATION.findall(value)
    return sum(float(n) * _UNIT[u] for n, u in parts) if parts else None


@dataclass
class _Held:
    limiter: RateLimiter
    users: int = 0
    released: float = 0.0  # when the last user let go


class Limiters:
    """The process's limiters, one per job and teacher (and configured limits): every worker of a job in this process
    shares one while it labels. One that nobody has used for `idle_seconds` is dropped, so a long-lived worker that
    sees many jobs keeps only those at work."""

    def __init__(self, idle_seconds: float = 900.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._idle, self._clock = idle_seconds, clock
        self._lock = threading.Lock()
        self._held: dict[tuple[str, ...], _Held] = {}

    @contextlib.contextmanager
    def use(self, key: tuple[str, ...], rpm: int | None, tpm: int | None) -> Iterator[RateLimiter]:
        full = (*key, str(rpm), str(tpm))
        with self._lock:
            now = self._clock()
            for other, held in list(self._held.items()):
                if not held.users and now - held.released > self._idle:
                    del self._held[other]
            held = self._held.setdefault(full, _Held(RateLimiter(rpm, tpm)))
            held.users += 1
        try:
            yield held.limiter
        finally:
            with self._lock:
                held.users -= 1
                held.released = self._clock()

    def __len__(self) -> int:
        return len(self._held)

    def clear(self) -> None:
        with self._lock:
            self._held.clear()


LIMITERS = Limiters()
