"""Live check of batch mode against a real provider's Batch API; runs only when its settings are set.

DISTILL_LIVE_BATCH_URL (an OpenAI-compatible base URL, or an Azure OpenAI endpoint with DISTILL_LIVE_BATCH_KIND=
azure_openai), DISTILL_LIVE_BATCH_MODEL (a model, or a Global-Batch deployment) and DISTILL_LIVE_BATCH_KEY (the key).
A real batch may take up to its 24 h window; the test waits at most DISTILL_LIVE_BATCH_MINUTES (default 30).
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest

from shared.jobs.paths import JobPaths
from shared.jobs.record import JobState, create_record, new_record
from shared.manifest.load import manifest_from_dict
from shared.pipeline.label import batch_step
from shared.rows import Row
from shared.services import Services
from shared.storage.local import LocalBlobStore

URL = os.environ.get("DISTILL_LIVE_BATCH_URL")


@pytest.mark.live
@pytest.mark.skipif(not URL, reason="live: set DISTILL_LIVE_BATCH_URL, _MODEL and _KEY to reach a real Batch API")
def test_one_request_goes_through_a_real_batch_into_the_cache(tmp_path: Path) -> None:
    teacher = {"kind": os.environ.get("DISTILL_LIVE_BATCH_KIND", "openai_compatible"), "url": URL,
               "model": os.environ["DISTILL_LIVE_BATCH_MODEL"], "key_setting": "DISTILL_LIVE_BATCH_KEY"}
    manifest = manifest_from_dict({"task": "nli", "training_file": "train.jsonl", "teacher": teacher,
                                   "batch": {"enabled": True, "poll_seconds": 30}}, tmp_path)
    store = LocalBlobStore(tmp_path / "storage")
    paths = JobPaths("jobs", "live-batch")
    record = new_record(paths.job)
    record.state = JobState.LABELING
    create_record(store, paths, record)
    question = "Premise: It rains.\nHypothesis: The street is wet.\nAnswer entailment, neutral or contradiction."
    rows = [("train", Row("id-0", "live", 1, ({"role": "user", "content": question},)))]
    services = Services(store=store, queue=None, finetuner=None)  # type: ignore[arg-type]
    deadline = time.time() + 60 * float(os.environ.get("DISTILL_LIVE_BATCH_MINUTES", "30"))

    async def until_done() -> None:
        while (step := await batch_step(services, paths, 0, manifest, rows)).wait_until is not None:
            assert time.time() < deadline, "the batch did not finish in time"
            await asyncio.sleep(max(0.0, step.wait_until - time.time()))
        assert step.failed == {}

    asyncio.run(until_done())
    assert len(list(store.list("teacher-cache/"))) == 1
