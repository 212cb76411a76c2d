"""The test teacher's endpoint-side behaviour for benchmarks: a request rate limit and random latency.

`ServerRateLimit` is a token bucket refilled at `rpm / 60` requests a second and holding `burst` requests; a request
finding it empty is answered 429 with the wait until the next token in `retry-after-ms` and `Retry-After`, as Azure
OpenAI does. `ExponentialLatency` draws each reply's delay from an exponential distribution with the given mean.
"""

from __future__ import annotations

import math
import random
import threading
import time
from collections.abc import Callable


class ServerRateLimit:
    def __init__(self, rpm: float, burst: float | None = None, *, report_limit: bool = True,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.rpm = rpm
        self.report_limit = report_limit  # send x-ratelimit-limit-requests / -remaining- with each reply
        self.rate = rpm / 60.0
        self.burst = burst if burst is not None else self.rate * 10  # ten seconds' worth
        self._level = self.burst
        self._clock = clock
        self._stamp = clock()
        self._lock = threading.Lock()
        self.refused = 0
        self.answered_at: list[float] = []  # when each request let through was taken (the clock's time)
        self.changed_at: float | None = None  # when `change` last moved the limit

    def change(self, rpm: float) -> None:
        """The limit moves to `rpm` from now on (its burst stays)."""
        with self._lock:
            self._refill()
            self.rpm, self.rate, self.changed_at = rpm, rpm / 60.0, self._stamp

    def _refill(self) -> None:
        """Refill the bucket up to now (the lock is held)."""
        now = self._clock()
        self._level = min(self.burst, self._level + (now - self._stamp) * self.rate)
        self._stamp = now

    def take(self) -> tuple[bool, dict[str, str]]:
        """Take one request; (allowed, rate-limit headers to send with the reply)."""
        with self._lock:
            self._refill()
            if self._level >= 1:
                self._level -= 1
                self.answered_at.append(self._stamp)
                if not self.report_limit:
                    return True, {}
                return True, {"x-ratelimit-limit-requests": str(round(self.rpm)),
                              "x-ratelimit-remaining-requests": str(math.floor(self._level))}
            self.refused += 1
            wait = (1 - self._level) / self.rate
            return False, {"retry-after-ms": str(math.ceil(wait * 1000)), "Retry-After": str(math.ceil(wait)),
                           "x-ratelimit-remaining-requests": "0",
                           "x-ratelimit-reset-requests": f"{math.ceil(wait * 1000)}ms"}


class ExponentialLatency:
    def __init__(self, mean: float, seed: int = 0) -> None:
        self.mean = mean
        self._random = random.Random(seed)
        self._lock = threading.Lock()

    def draw(self) -> float:
        with self._lock:
            return self._random.expovariate(1 / self.mean) if self.mean > 0 else 0.0
