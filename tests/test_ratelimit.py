"""The rate limiter: pacing, headers and 429s with a fake clock; over real HTTP, a 429 pauses every caller."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math

import pytest
from ratelimit_sim import Endpoint, Outcome, simulate

from shared.manifest.model import InferenceParameters, TeacherKind, TeacherSettings
from shared.teacher.factory import teacher_for
from shared.teacher.ratelimit import (
    LEARNED_BACKOFF,
    LEARNED_SHARE,
    MAX_LEARNED_REQUESTS,
    REGAIN_SECONDS,
    SLOW_START,
    START_RATE,
    Estimate,
    Limiters,
    RateLimiter,
    Throttled,
    TooEarly,
    estimate_tokens,
)
from shared.teacher.retry import MAX_RETRY_HINT, RetryPolicy
from shared.testkit.limits import ServerRateLimit
from shared.testkit.teacher import FakeTeacher


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now



def demand(limiter: RateLimiter) -> None:
    """Callers with more work than the pace lets through: they take every turn it gives now, and the next is held
    back (the only time a learned pace learns it may grow)."""
    with contextlib.suppress(TooEarly):
        while True:
            limiter.reserve(10, ahead=0.0)


def test_requests_are_spaced_at_the_configured_rate_after_a_one_second_burst() -> None:
    clock = Clock()
    limiter = RateLimiter(rpm=600, clock=clock)  # 10 a second, burst of 10
    waits = [limiter.reserve(0) for _ in range(30)]
    assert waits[:10] == pytest.approx([0.0] * 10, abs=1e-9)
    assert waits[10:] == pytest.approx([0.1 * i for i in range(1, 21)])


def test_tokens_are_paced_and_corrected_by_the_reported_usage() -> None:
    clock = Clock()
    limiter = RateLimiter(tpm=6000, clock=clock)  # 100 tokens a second, burst 100
    assert limiter.reserve(100) == 0.0
    assert limiter.reserve(100) == pytest.approx(1.0)
    limiter.settled(Estimate(50, 100), 20, 30, {})  # both calls used 30 of the 100 reserved
    limiter.settled(Estimate(50, 100), 20, 30, {})
    assert limiter.reserve(100) == pytest.approx(0.6)  # 60 of the 100-token burst used: 60 to wait for


def test_reported_prompt_tokens_correct_later_estimates() -> None:
    limiter = RateLimiter(tpm=6000, clock=Clock())
    messages = [{"role": "user", "content": "x" * 400}]
    first = limiter.estimate(messages, 10)
    assert first.total == estimate_tokens(messages, 10) == 114
    for _ in range(30):
        limiter.settled(first, first.prompt * 2, first.prompt * 2 + 10, {})
    assert limiter.estimate(messages, 10).total > first.total * 1.8


def test_a_429_pauses_everyone_until_the_hint_and_slows_the_pace() -> None:
    clock = Clock()
    limiter = RateLimiter(rpm=600, clock=clock)
    limiter.rate_limited({"retry-after-ms": "2500"})
    assert limiter.reserve(0) == pytest.approx(2.5 + 0.1 / 0.8)
    assert limiter.throttled == 1


def test_an_unconfigured_limiter_starts_slowly_and_speeds_up_while_calls_succeed() -> None:
    clock = Clock()
    limiter = RateLimiter(clock=clock)
    waits = [limiter.reserve(10) for _ in range(6)]  # START_RATE a second, after a burst of one second's worth
    assert waits == pytest.approx([0, 0, 0, 0, 0.25, 0.5])
    for _ in range(10):  # ten seconds of calls that succeed, more of them waiting
        clock.now += 1
        demand(limiter)
        limiter.settled(Estimate(5, 10), 5, 10, {}, clock.now)
    assert limiter.pace()[0] == pytest.approx(START_RATE * SLOW_START ** 10 * 60) and limiter.pace()[1] == "learned"


def test_a_pace_that_holds_no_call_back_does_not_grow() -> None:
    """Eight calls in flight to a model on a CPU, each answered after half a minute: the pace never held one back,
    so an hour of them leaves it where it started (it used to climb to its ceiling, shown as 120,000 calls a minute),
    and the first time callers wait on it, it grows again."""
    clock = Clock()
    limiter = RateLimiter(clock=clock)
    for _ in range(8 * 120):
        assert limiter.reserve(10) == 0
        clock.now += 30 / 8
        limiter.settled(Estimate(5, 10), 5, 10, {}, clock.now - 30)
    assert limiter.pace() == (START_RATE * 60, "learned")
    clock.now += 1
    demand(limiter)
    clock.now += 1
    limiter.settled(Estimate(5, 10), 5, 10, {}, clock.now)
    assert limiter.pace()[0] == pytest.approx(START_RATE * SLOW_START * 60)


def test_a_call_slower_than_the_learning_window_is_settled_calmly() -> None:
    """A local teacher reasoning on a CPU answers after minutes: such a call tells nothing of the pace (it was sent
    before the window), and settling it must not fail the shard."""
    clock = Clock()
    limiter = RateLimiter(clock=clock)
    limiter.reserve(10)
    sent = clock.now
    clock.now += 600
    limiter.settled(Estimate(5, 10), 5, 10, {}, sent)
    limiter.settled(Estimate(5, 10), 5, 10, {}, sent)
    assert limiter.pace()[1] == "learned"


def test_hours_without_a_429_leave_the_learned_pace_finite() -> None:
    """A teacher slower than its limit never answers 429, so the pace keeps probing upward: it stops at a finite
    ceiling (it went to infinity after about seven hours, and its probing step overflowed after twelve), and a
    reservation after thirteen hours is still a number."""
    clock = Clock()
    limiter = RateLimiter(clock=clock)
    limiter.rate_limited({}, 10)  # one 429 episode at the start: from then on the pace probes upward
    for _ in range(13 * 60):  # a minute at a time, callers always waiting
        clock.now += 60
        demand(limiter)
        limiter.settled(Estimate(5, 10), 5, 10, {}, clock.now - 0.5)
    assert limiter.pace()[0] == MAX_LEARNED_REQUESTS * 60
    assert math.isfinite(limiter.reserve(10))


def test_a_429_sets_the_pace_under_what_the_endpoint_let_through_and_a_stale_one_only_pauses() -> None:
    clock = Clock()
    limiter = RateLimiter(clock=clock)
    for _ in range(40):  # 40 calls sent over 8 s succeed: 5 a second, while slow start has grown the pace past it
        demand(limiter)
        limiter.settled(Estimate(5, 10), 5, 10, {}, clock.now)
        clock.now += 0.2
    assert limiter.pace()[0] > 5 * 60
    limiter.rate_limited({"retry-after-ms": "500"}, 10, sent=clock.now - 0.2)
    learned = LEARNED_SHARE * 40 / 8.0
    assert limiter.pace()[0] == pytest.approx(learned * LEARNED_BACKOFF * 60)
    assert limiter.reserve(10) == pytest.approx(0.5 + 1 / (learned * LEARNED_BACKOFF))  # paused, then paced
    clock.now += 5
    limiter.rate_limited({}, 10, sent=clock.now - 6)  # sent before the slow-down: it says nothing new
    assert limiter.pace()[0] == pytest.approx(learned * LEARNED_BACKOFF * 60)


def test_a_learned_pace_climbs_back_then_probes_above_its_ceiling_faster_the_longer_it_meets_no_429() -> None:
    clock = Clock()
    limiter = RateLimiter(clock=clock)
    for _ in range(100):
        demand(limiter)
        limiter.settled(Estimate(5, 10), 5, 10, {}, clock.now)
        clock.now += 0.1
    limiter.rate_limited({}, 10, sent=clock.now)
    ceiling = limiter.pace()[0] / LEARNED_BACKOFF
    paces = []
    for _ in range(120):  # two minutes of calls that succeed, one every 0.1 s, more of them waiting
        for _ in range(10):
            clock.now += 0.1
            demand(limiter)
            limiter.settled(Estimate(5, 10), 5, 10, {}, clock.now)
        paces.append(limiter.pace()[0])
    assert paces[int(REGAIN_SECONDS) * 2] == pytest.approx(ceiling, rel=0.02)  # back at the ceiling within seconds
    gains = [b / a for a, b in itertools.pairwise(paces[20:])]
    assert all(g >= 1 for g in gains) and gains[-1] - 1 > 2 * (gains[0] - 1) > 0  # probing, ever faster
    assert paces[-1] > 2 * ceiling


def test_a_call_whose_turn_is_far_off_is_told_to_ask_again() -> None:
    clock = Clock()
    limiter = RateLimiter(rpm=60, clock=clock)
    assert limiter.reserve(0, ahead=0.25) == 0.0  # the burst
    with pytest.raises(TooEarly) as early:
        limiter.reserve(0, ahead=0.25)
    assert (early.value.seconds, early.value.due) == pytest.approx((0.25, 1.0))
    clock.now += 0.9
    assert limiter.reserve(0, ahead=0.25) == pytest.approx(0.1)  # nothing was reserved by the refused call


@pytest.mark.parametrize("burst", [20, 100])
def test_a_limit_nobody_states_is_found_and_held(burst: int) -> None:
    """1,000 rows, 40 callers, 300 ms calls, against 600 a minute that only 429s tell of (the throughput bench's
    teacher, simulated)."""
    outcome = simulate(Endpoint(600, burst), 1000)
    assert outcome.utilisation(600, 0, max(outcome.answered)) >= 0.9
    assert outcome.refused_share <= 0.03


@pytest.mark.parametrize("before,after", [(300, 600), (600, 300)])
def test_a_limit_that_changes_is_followed_within_two_minutes(before: int, after: int) -> None:
    endpoint = Endpoint(before, 20)
    outcome = simulate(endpoint, 2500, events={120.0: lambda: setattr(endpoint, "rpm", after)})
    assert outcome.utilisation(after, 240, max(outcome.answered)) >= 0.85
    assert outcome.refused_share <= 0.03


def test_an_unconfigured_limiter_takes_the_limit_the_endpoint_reports() -> None:
    clock = Clock()
    limiter = RateLimiter(clock=clock)
    limiter.settled(Estimate(5, 10), 5, 10, {"x-ratelimit-limit-requests": "600"})
    waits = [limiter.reserve(10) for _ in range(12)]
    assert waits[10:] == pytest.approx([0.1, 0.2])
    configured = RateLimiter(rpm=60, clock=clock)  # a configured limit wins over the header
    configured.settled(Estimate(5, 10), 5, 10, {"x-ratelimit-limit-requests": "600"})
    assert [configured.reserve(0) for _ in range(2)] == pytest.approx([0.0, 1.0])


def test_remaining_headers_pause_callers_until_the_reset() -> None:
    clock = Clock()
    limiter = RateLimiter(rpm=60_000, clock=clock)
    limiter.settled(Estimate(5, 10), 5, 10, {"x-ratelimit-remaining-requests": "0",
                                             "x-ratelimit-reset-requests": "1m30s"})
    assert limiter.reserve(10) == pytest.approx(90.0, abs=0.01)
    clock.now += 100
    limiter.settled(Estimate(5, 500), 5, 10, {"x-ratelimit-remaining-tokens": "100",
                                              "x-ratelimit-reset-tokens": "250ms"})
    assert limiter.reserve(10) == pytest.approx(0.25, abs=0.01)


def test_a_wait_beyond_max_wait_raises_throttled_and_reserves_nothing() -> None:
    clock = Clock()
    limiter = RateLimiter(rpm=60, clock=clock)  # one a second
    assert limiter.reserve(0, max_wait=5) == 0.0
    limiter.rate_limited({"retry-after": "30"})
    with pytest.raises(Throttled) as caught:
        limiter.reserve(0, max_wait=5)
    assert caught.value.until >= clock.now + 30
    clock.now += 31.5
    assert limiter.reserve(0, max_wait=5) <= 1.0


def test_the_server_bucket_answers_429_with_the_wait_until_its_next_token() -> None:
    clock = Clock()
    bucket = ServerRateLimit(rpm=60, burst=2, clock=clock)
    assert bucket.take()[0] and bucket.take()[0]
    allowed, headers = bucket.take()
    assert not allowed and headers["retry-after-ms"] == "1000" and bucket.refused == 1
    clock.now += 1
    assert bucket.take()[0]


def test_over_http_a_paced_client_is_not_refused_and_a_refused_one_recovers() -> None:
    """Twenty calls at once against a 120 rpm teacher with a burst of 2: the client's own 429 handling
    (pause + retry without backoff) gets every call through."""
    async def calls(url: str, limiter: RateLimiter) -> list[str | None]:
        settings = TeacherSettings(kind=TeacherKind.OPENAI_COMPATIBLE, url=url, max_retries=20)
        async with teacher_for(settings, InferenceParameters(), limiter=limiter,
                               retry=RetryPolicy(base_delay=0.01)) as client:
            replies = await asyncio.gather(*(client.complete([{"role": "user", "content": f"q{i}"}])
                                             for i in range(8)))
        return [r.content for r in replies]

    with FakeTeacher(task=None, rate_limit=ServerRateLimit(rpm=600, burst=2)) as teacher:
        limiter = RateLimiter()  # no configured limit: learns from the 429s
        assert asyncio.run(calls(teacher.base_url, limiter)) == ["ok"] * 8
        assert limiter.throttled >= 1
        refused = teacher.rate_limit.refused
    with FakeTeacher(task=None, rate_limit=ServerRateLimit(rpm=600, burst=10)) as teacher:
        assert asyncio.run(calls(teacher.base_url, RateLimiter(rpm=540))) == ["ok"] * 8
        assert teacher.rate_limit.refused == 0 < refused


def test_a_job_shares_one_limiter_while_it_labels_and_an_idle_one_is_dropped() -> None:
    """A long-lived worker sees many jobs: it keeps the limiters in use, and lets go of those idle for long."""
    clock = Clock()
    limiters = Limiters(idle_seconds=60, clock=clock)
    with limiters.use(("job-a", "http://t", "m"), 600, None) as first:
        with limiters.use(("job-a", "http://t", "m"), 600, None) as second:
            assert first is second
        clock.now += 3600  # a long shard: job-a's limiter stays while a worker holds it
        with limiters.use(("job-b", "http://t", "m"), None, None) as other:
            assert other is not first and len(limiters) == 2
        with limiters.use(("job-a", "http://t", "m"), 600, None) as again:
            assert again is first
    clock.now += 61
    with limiters.use(("job-c", "http://t", "m"), None, None):
        assert len(limiters) == 1


@pytest.mark.parametrize("hint", [{"Retry-After": "999999"}, {"retry-after-ms": "999999999"},
                                  {"Retry-After": "Fri, 31 Dec 2100 23:59:59 GMT"}])
def test_a_servers_absurd_hint_pauses_the_job_no_longer_than_the_cap(hint: dict[str, str]) -> None:
    clock = Clock()
    limiter = RateLimiter(rpm=60, clock=clock)
    limiter.rate_limited(hint)
    assert MAX_RETRY_HINT <= limiter.reserve(0) <= MAX_RETRY_HINT + 5  # the pause, then the slowed pace


def test_the_pace_says_where_it_comes_from() -> None:
    clock = Clock()
    assert RateLimiter(rpm=600, clock=clock).pace() == (600.0, "configured")
    learning = RateLimiter(clock=clock)
    assert learning.pace() == (START_RATE * 60, "learned")
    learning.settled(Estimate(5, 10), 5, 10, {"x-ratelimit-limit-requests": "900"})
    assert learning.pace() == (900.0, "headers")
    assert RateLimiter(rpm=None, tpm=1000, clock=clock).pace()[1] == "learned"


def test_a_token_limit_nobody_states_is_learned_too() -> None:
    """60,000 tokens a minute and no request limit; calls of 50 to 500 tokens (about 3.6 a second would fit)."""
    endpoint = Endpoint(60_000, 6_000, per_token=True)
    outcome = simulate(endpoint, 600, tokens=(50, 500))
    assert Outcome.unit_share(endpoint, 0, max(outcome.answered)) >= 0.9
    assert outcome.refused_share <= 0.05
