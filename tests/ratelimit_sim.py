"""A discrete-event simulation of Distill's callers against an endpoint's token bucket, on a simulated clock: the
rate limiter is driven exactly as the teacher client drives it (reserve, then settled or rate_limited), with no
sleeping, so tests can measure what pace it learns."""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from shared.teacher.ratelimit import RESERVE_AHEAD, Estimate, RateLimiter, TooEarly


@dataclass
class Endpoint:
    """A token bucket of `rpm` units a minute holding `burst` units; a unit is a request, or with `per_token` a
    token of the request. It answers 429 with `retry-after-ms` and no other rate-limit header. `rpm` may change while
    the simulation runs."""

    rpm: float
    burst: float
    per_token: bool = False
    level: float = field(init=False)
    stamp: float = 0.0
    answered: int = 0
    refused: int = 0
    units: list[tuple[float, int]] = field(default_factory=list)  # (when, units) of each call let through

    def __post_init__(self) -> None:
        self.level = self.burst

    def take(self, now: float, tokens: int = 1) -> dict[str, str] | None:
        """None when the request (of `tokens` tokens) is let through; the 429's headers when it is refused."""
        rate, need = self.rpm / 60, tokens if self.per_token else 1
        self.level = min(self.burst, self.level + (now - self.stamp) * rate)
        self.stamp = now
        if self.level >= need:
            self.level -= need
            self.answered += 1
            self.units.append((now, need))
            return None
        self.refused += 1
        return {"retry-after-ms": str(math.ceil((need - self.level) / rate * 1000))}


@dataclass
class Outcome:
    answered: list[float]  # when each answered call came back
    refused: int
    sent: int

    def utilisation(self, rpm: float, start: float, end: float) -> float:
        """Calls answered between `start` and `end` (seconds) per minute, as a share of `rpm`."""
        done = sum(start <= t < end for t in self.answered)
        return done / (end - start) * 60 / rpm

    @staticmethod
    def unit_share(endpoint: Endpoint, start: float, end: float) -> float:
        """The units (calls, or tokens) the endpoint let through between `start` and `end`, as a share of its
        limit."""
        taken = sum(n for t, n in endpoint.units if start <= t < end)
        return taken / (end - start) * 60 / endpoint.rpm

    @property
    def refused_share(self) -> float:
        return self.refused / self.sent


def simulate(endpoint: Endpoint, rows: int, *, callers: int = 40, latency: float = 0.3, seed: int = 7,
             make_limiter: Callable[[Callable[[], float]], RateLimiter] | None = None,
             events: dict[float, Callable[[], None]] | None = None, tokens: tuple[int, int] = (100, 100)
             ) -> Outcome:
    """`callers` concurrent callers label `rows` rows through one limiter (built by `make_limiter` on the simulated
    clock; by default one with no limit configured); each call takes an exponentially distributed latency (mean
    `latency`), and a refused call is asked again, as the teacher client does. `events` are run at their times (a
    limit that changes). Each row's call uses between `tokens[0]` and `tokens[1]` tokens (estimated exactly)."""
    clock = [0.0]
    limiter = (make_limiter or (lambda now: RateLimiter(clock=now)))(lambda: clock[0])
    draw = random.Random(seed)
    queue: list[tuple[float, int, str, int]] = []  # (time, order, kind, caller)
    order = 0
    left = rows
    answered: list[float] = []
    sent = 0
    refusals: dict[int, tuple[dict[str, str], float]] = {}  # caller → the 429's headers and when it was sent
    sent_at: dict[int, float] = {}  # caller → when its call in flight was sent
    size: dict[int, int] = {}  # caller → the tokens of its row's call
    pending = sorted((events or {}).items())

    def push(when: float, kind: str, caller: int) -> None:
        nonlocal order
        order += 1
        heapq.heappush(queue, (when, order, kind, caller))

    for caller in range(min(callers, rows)):
        push(0.0, "reserve", caller)
        left -= 1
    while queue:
        now, _, kind, caller = heapq.heappop(queue)
        while pending and pending[0][0] <= now:
            pending.pop(0)[1]()
        clock[0] = now
        if kind == "reserve":  # as the teacher client takes its turn (shared.teacher.resilient)
            size.setdefault(caller, draw.randint(*tokens))
            try:
                push(now + limiter.reserve(size[caller], ahead=RESERVE_AHEAD), "send", caller)
            except TooEarly as early:
                push(now + early.seconds, "reserve", caller)
        elif kind == "send":
            sent += 1
            refusal = endpoint.take(now, size[caller])
            push(now + draw.expovariate(1 / latency), "refused" if refusal else "answered", caller)
            sent_at[caller] = now
            if refusal:
                refusals[caller] = (refusal, now)
        elif kind == "refused":
            headers, when = refusals.pop(caller)
            limiter.rate_limited(headers, size[caller], when)
            push(now, "reserve", caller)
        else:
            used = size.pop(caller)
            limiter.settled(Estimate(used // 2, used), used // 2, used, {}, sent_at[caller])
            answered.append(now)
            if left:
                left -= 1
                push(now, "reserve", caller)
    return Outcome(answered, endpoint.refused, sent)
