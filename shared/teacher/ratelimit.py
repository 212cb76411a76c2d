"""Pacing teacher calls to the endpoint's rate limits, shared by every worker of a job in one process.

Two buckets, requests and tokens, each a reservation-style token bucket (GCRA): a call reserves its share and waits
until the reservation falls due, so concurrent callers line up at the configured rate instead of racing and being
answered 429. Token use is estimated before sending (characters / 4 plus `max_tokens`) and corrected once the
teacher reports what it used. The limiter adapts to what the endpoint says:

- a 429 or a `retry-after` / `retry-after-ms` hint pauses every caller until then, and lowers the pace (a
  configured or stated limit: x0.8 per burst of 429s, back up by 2% of it per successful call);
- with no configured limit, `x-ratelimit-limit-requests` / `-tokens` (OpenAI's per-minute limits) become the limits;
- with neither, the request pace is learned (`_Probe`): slow start from START_RATE calls a second until the first
  429, then each burst of 429s sets the pace just under what the endpoint let through (the calls that succeeded, by
  when they were sent) and the pace probes above it again after a quiet spell; a token pace nothing states is learned
  the same way from the first burst of 429s on (a 429 does not say which limit it met: both back off, and the one
  that does not bind climbs back); a 429 for a call sent before the last slow-down tells of a pace already left
  behind and only pauses; learned paces grow only while the limiter holds calls back (as TCP validates its
  congestion window), so a teacher slower than any pace (a model on a CPU) leaves them where they are instead of
  sending them upward;
- `x-ratelimit-remaining-requests: 0` or fewer `x-ratelimit-remaining-tokens` than a call needs pauses callers until
  the matching `x-ratelimit-reset-*` (or one second when the endpoint gives no reset).

The limiter is thread-safe: workers running shards in threads, each with its own event loop, share one per job.
Callers reserve their turn at most RESERVE_AHEAD seconds ahead and otherwise ask again later, so a pace that grows
(a learned one probing upward) speeds up callers already waiting.
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
SLOWDOWN_GAP = 2.0  # 429s within this many seconds of a slow-down are one episode (calls already in flight)
LEARNED_SHARE = 0.95  # a pace learned from successes stays this far under them
LEARN_WINDOW = 10.0  # seconds of successful calls that measure the pace the endpoint lets through at a 429 episode
FIRST_WINDOW = 3.0  # the same at the first episode: the seconds before it may have drawn on the endpoint's burst
LEARNED_BACKOFF = 0.85  # a learned pace after a 429 episode, as a share of the pace that met it
REGAIN_SECONDS = 5.0
PROBE_START = 0.005
PROBE_DOUBLING = 40.0
PROBE_MAX = 0.03
MIN_LEARNED_RATE = 0.1  # requests a second: a learned pace never falls below one call in ten seconds
# The most a learned pace grows to while no 429 comes (a teacher slower than its limit never sends one): far above
# any endpoint's quota, and finite, so hours of probing cannot overflow the arithmetic of the buckets
MAX_LEARNED_REQUESTS = 2_000.0  # a second: 120,000 a minute
MAX_LEARNED_TOKENS = 20_000_000.0  # a second
MIN_OBSERVED = 5  # calls that must have succeeded for their pace to be measured
SLOW_START = 1.2  # a pace nothing states grows by a fifth every second until the first 429 episode (slow start)
START_RATE = 4.0  # calls a second it starts from
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


RATE_LIMIT = "the teacher's rate limit"  # the cause of a wait, as shown to the user
RESERVE_AHEAD = 0.25  # seconds: a caller whose turn is further away asks again after this long


class TooEarly(Exception):
    """The call's turn is more than `seconds` away: nothing is reserved; ask again then, at the pace of that moment
    (which may have grown meanwhile). `due` is how long the whole wait looks now."""

    def __init__(self, seconds: float, due: float) -> None:
        super().__init__(f"ask again in {seconds:.1f} s")
        self.seconds, self.due = seconds, due


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
class _Probe:
    """How a request pace nobody states is found and held (AIMD with probing).

    At a 429 episode the pace that the endpoint let through (the calls that succeeded in the last few seconds) becomes
    the ceiling, and the pace drops to LEARNED_BACKOFF of it; it climbs back to the ceiling within about REGAIN_SECONDS,
    then probes above it by PROBE_START of itself a second, a step that doubles every PROBE_DOUBLING seconds without a
    429 (up to PROBE_MAX), so a limit that rises is found within a minute or two and one that falls within a few
    episodes. Before the first 429 (`slow_start`) the pace starts at START_RATE calls a second and doubles every
    second, as TCP's slow start does, so a first burst of calls does not flood the endpoint."""

    ceiling: float  # requests a second the endpoint let through at the last 429 episode
    since: float  # when that episode was
    updated: float  # when the pace last grew
    slow_start: bool = False
    most: float = MAX_LEARNED_REQUESTS  # the pace grows no further (units a second)

    def grow(self, bucket: _Bucket, now: float, held_back: bool) -> None:
        """Grow with the time since the last call settled, if the limiter `held_back` a call meanwhile (else the
        pace was not what limited the calls, and says nothing about how far it may go)."""
        elapsed, self.updated = max(0.0, now - self.updated), now
        if not held_back:
            return
        if self.slow_start:
            bucket.rate *= SLOW_START ** min(elapsed, 1.0)
        elif bucket.rate < self.ceiling * 0.99:
            bucket.rate += (self.ceiling - bucket.rate) * min(1.0, elapsed / REGAIN_SECONDS)
        else:
            step = min(PROBE_MAX, PROBE_START * 2 ** min((now - self.since) / PROBE_DOUBLING, 64))
            bucket.rate *= 1 + step * min(elapsed, 1.0)
        bucket.rate = min(bucket.rate, self.most)
        _resize(bucket)

    def back_off(self, bucket: _Bucket, now: float, observed: float | None) -> None:
        """A 429 episode: `observed` is the pace calls succeeded at lately (None when too few did to tell)."""
        self.ceiling = min(bucket.rate, observed) if observed else bucket.rate
        self.since, self.updated, self.slow_start = now, now, False
        bucket.rate = max(MIN_LEARNED_RATE, self.ceiling * LEARNED_BACKOFF)
        _resize(bucket)


def _resize(bucket: _Bucket) -> None:
    """A learned bucket's limit and burst follow its pace."""
    bucket.limit = max(bucket.limit, bucket.rate)
    bucket.burst = max(1.0, bucket.rate * BURST_SECONDS)


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
        self._probe: _Probe | None = None  # the request pace learned from 429s alone (no limit configured or sent)
        self._token_probe: _Probe | None = None  # the same for tokens, from the first 429 episode on
        self._held_back = False  # the pace (either bucket) held a call back since a call last settled
        if rpm is None:  # nothing states the limit yet: slow start, from START_RATE calls a second
            now = clock()
            self._requests = _bucket_at(START_RATE, now)
            self._probe = _Probe(START_RATE, now, now, slow_start=True)
        self._paused_until = 0.0
        self._learning = (rpm is None, tpm is None)  # limits not configured: taken from the endpoint
        self._seen_limits: list[int | None] = [None, None]  # the last x-ratelimit-limit-requests / -tokens values
        # recent calls that succeeded: when sent, and the tokens reserved for them (what the token bucket paces, as an
        # endpoint that counts a request's max_tokens against its limit does)
        self._successes: deque[tuple[float, int]] = deque()
        self._last_slowdown = float("-inf")
        self._prompt_ratio = 1.0  # reported prompt tokens / estimated, smoothed
        self.throttled = 0  # 429s seen

    def estimate(self, messages: list[dict], max_tokens: int | None) -> Estimate:
        """The estimate, corrected by how far the teacher's reported prompt tokens were from earlier estimates."""
        prompt = estimate_tokens(messages, None)
        return Estimate(prompt, round(prompt * self._prompt_ratio) + (max_tokens or 0))

    def reserve(self, tokens: int, *, max_wait: float | None = None, ahead: float | None = None) -> float:
        """Reserve one request and `tokens` tokens; returns the seconds to wait before sending.

        Raises Throttled, reserving nothing, when the wait would exceed `max_wait`; and TooEarly, reserving nothing,
        when it would exceed `ahead` (so that callers queued behind a slow pace are not held to it once it grows).
        """
        with self._lock:
            now = self._clock()
            due = self._paused_until
            for bucket, amount in ((self._requests, 1), (self._tokens, tokens)):
                if bucket and (bucket_due := bucket.due(amount, now)) > now:
                    self._held_back = True
                    due = max(due, bucket_due)
            wait = max(0.0, due - now)
            if max_wait is not None and wait > max_wait:
                raise Throttled(due)
            if ahead is not None and wait > ahead:
                raise TooEarly(ahead, wait)
            if self._requests:
                self._requests.take(1, max(now, due))
            if self._tokens:
                self._tokens.take(tokens, max(now, due))
            return wait

    def settled(self, estimate: Estimate, prompt_used: int, used: int, headers: Mapping[str, str],
                sent: float | None = None) -> None:
        """A call (`sent` then, by the limiter's clock) came back: correct the token reservation by what was used,
        and heed the rate-limit headers."""
        with self._lock:
            if self._tokens and used:
                self._tokens.give_back(estimate.total - used)
            if estimate.prompt and prompt_used:
                self._prompt_ratio = 0.9 * self._prompt_ratio + 0.1 * (prompt_used / estimate.prompt)
            now = self._clock()
            for bucket, probe in ((self._requests, self._probe), (self._tokens, self._token_probe)):
                if bucket and probe:
                    probe.grow(bucket, now, self._held_back)
                elif bucket:
                    bucket.recover()
            self._held_back = False
            lower = {k.lower(): v for k, v in headers.items()}
            self._learn_limits(lower)
            if any(self._learning):
                self._successes.append((now if sent is None else sent, estimate.total))
                while self._successes and self._successes[0][0] < now - LEARN_WINDOW:  # a slow call's own is too
                    self._successes.popleft()
            self._heed_remaining(lower, estimate.total)

    def pace(self) -> tuple[float, str] | None:
        """The request pace now, in calls a minute, and where it comes from: "configured", "headers" (the endpoint's
        `x-ratelimit-limit-requests`) or "learned" (from 429s alone); None when calls are not paced."""
        with self._lock:
            if self._requests is None:
                return None
            source = "learned" if self._probe else "headers" if self._seen_limits[0] else "configured"
            return self._requests.rate * 60, source

    def adopt(self, per_minute: float) -> bool:
        """Start a pace nothing states at `per_minute` (what other instances of the job learned) instead of in slow
        start, as if a 429 episode had measured it; False, changing nothing, once this limiter has its own measure."""
        with self._lock:
            if not (self._probe and self._probe.slow_start and self._requests):
                return False
            now, rate = self._clock(), max(MIN_LEARNED_RATE, per_minute / 60)
            self._requests = _bucket_at(rate, now)
            self._probe = _Probe(rate, now, now)
            return True

    def now(self) -> float:
        """The limiter's clock (when a call is sent, for `rate_limited`)."""
        return self._clock()

    def rate_limited(self, headers: Mapping[str, str] | None, estimated: int = 0, sent: float | None = None) -> None:
        """A 429: pause everyone until the server's hint (or a short while) and lower the pace, unless the refused
        call was `sent` before the last slow-down (it tells of a pace already left behind)."""
        with self._lock:
            self.throttled += 1
            now = self._clock()
            hint = retry_hint(headers)
            pause = hint if hint is not None else NO_RESET_PAUSE
            self._learn_limits({k.lower(): v for k, v in (headers or {}).items()})
            stale = sent is not None and sent < self._last_slowdown
            if not stale and now - self._last_slowdown >= SLOWDOWN_GAP:
                calls, tokens = self._observed_pace(now) or (None, None)
                self._last_slowdown = now
                if self._probe and self._requests:  # a pace learned from 429s: back off, and probe again later
                    self._probe.back_off(self._requests, now, calls)
                elif self._requests:
                    self._requests.slow_down()
                if self._token_probe and self._tokens:
                    self._token_probe.back_off(self._tokens, now, tokens)
                elif self._learning[1] and self._seen_limits[1] is None and tokens:  # learn a token pace from now on
                    self._tokens = _bucket_at(tokens, now)
                    self._token_probe = _Probe(tokens, now, now, most=MAX_LEARNED_TOKENS)
                    self._token_probe.back_off(self._tokens, now, tokens)
                elif self._tokens:
                    self._tokens.slow_down()
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
                self._requests, self._probe = _bucket(limit), None
            else:
                self._tokens, self._token_probe = _bucket(limit), None

    def _observed_pace(self, now: float) -> tuple[float, float] | None:
        """The pace of the calls that succeeded, by when they were sent, since the last 429 episode (within
        LEARN_WINDOW seconds), in calls and in tokens a second, a little under it so that the endpoint's own buckets,
        drained by then, fill up again; None when too few succeeded to tell."""
        start = max(now - LEARN_WINDOW, self._last_slowdown)
        recent = [(sent, used) for sent, used in self._successes if sent >= start]
        if len(recent) < MIN_OBSERVED:
            return None
        span = max(1.0, now - recent[0][0])
        return LEARNED_SHARE * len(recent) / span, LEARNED_SHARE * sum(used for _, used in recent) / span

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
    return _bucket_at(per_minute / 60.0, 0.0)


def _bucket_at(rate: float, now: float) -> _Bucket:
    """A bucket at `rate` units a second, holding BURST_SECONDS of it (at least one unit), from `now`."""
    return _Bucket(limit=rate, rate=rate, burst=max(1.0, rate * BURST_SECONDS), tat=now)


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
