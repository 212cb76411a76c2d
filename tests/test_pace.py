"""The teacher's pace shared by the instances labelling one job (`jobs/<job>/pace.json`)."""

import json
from pathlib import Path

import pytest

from shared.jobs.paths import JobPaths
from shared.pipeline import pace
from shared.storage.local import LocalBlobStore
from shared.teacher.ratelimit import START_RATE, Estimate, RateLimiter

PATHS = JobPaths("jobs", "job1")


def learned(clock: list[float]) -> RateLimiter:
    """A limiter that has learned a pace of about 10 calls a second x back-off from a 429 episode."""
    limiter = RateLimiter(clock=lambda: clock[0])
    for _ in range(50):
        limiter.settled(Estimate(5, 10), 5, 10, {}, clock[0])
        clock[0] += 0.1
    limiter.rate_limited({}, 10, sent=clock[0])
    return limiter


def test_an_instance_starting_on_a_job_takes_its_share_of_what_the_others_learned(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = LocalBlobStore(tmp_path)
    clock = [1000.0]
    first = learned(clock)
    monkeypatch.setattr(pace, "instance_id", lambda: "instance-a")
    pace.PaceSharer(store, PATHS).share(first)
    doc = json.loads(store.read(PATHS.pace).data)
    assert doc["instances"]["instance-a"]["source"] == "learned"
    learned_pace = doc["instances"]["instance-a"]["per_minute"]
    monkeypatch.setattr(pace, "instance_id", lambda: "instance-b")
    second = RateLimiter(clock=lambda: clock[0])
    assert second.pace() == (START_RATE * 60, "learned")  # in slow start
    assert pace.start_from_shared(second, store, PATHS) == pytest.approx(learned_pace / 2)
    assert second.pace()[0] == pytest.approx(learned_pace / 2)
    assert pace.start_from_shared(first, store, PATHS) is None  # a limiter with its own measure keeps it


def test_instances_not_heard_from_for_a_minute_no_longer_count(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    store = LocalBlobStore(tmp_path)
    store.write(PATHS.pace, json.dumps({"instances": {
        "gone": {"per_minute": 900.0, "source": "learned", "seen": 0.0}}}).encode())
    fresh = RateLimiter()
    assert pace.start_from_shared(fresh, store, PATHS) is None and fresh.pace()[0] == START_RATE * 60
    monkeypatch.setattr(pace, "instance_id", lambda: "here")
    pace.PaceSharer(store, PATHS).share(fresh)
    assert set(json.loads(store.read(PATHS.pace).data)["instances"]) == {"here"}  # the stale one is dropped


def test_an_instance_writes_its_pace_at_most_every_few_seconds(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    writes: list[str] = []
    real_write = store.write
    store.write = lambda path, data, **kw: writes.append(path) or real_write(path, data, **kw)  # type: ignore[method-assign]
    sharer, limiter = pace.PaceSharer(store, PATHS), RateLimiter(rpm=600)
    for _ in range(50):
        sharer.share(limiter)
    assert writes == [PATHS.pace]
    sharer.share(RateLimiter(rpm=300), force=True)  # at the end of a shard, whatever the time since
    assert len(writes) == 2 and json.loads(store.read(PATHS.pace).data)["instances"]
