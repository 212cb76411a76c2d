"""`distill gc`: remove local jobs that ended long enough ago (their input copies, working files, outputs and queue).

A job is removed only when its state is final (succeeded, dataset ready, budget spent, cancelled, failed), no run holds
it, and its record has not changed for the given age. The response cache and trained models are kept: the cache saves
later jobs money, and a model is the point of a job.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from shared.jobs.record import JobRecord
from shared.local.run import discard, home, is_running, lock_file
from shared.settings import Settings


def gc(older_than: float, dry_run: bool) -> int:
    """Remove (or with `dry_run`, list) the local jobs that ended and have not changed for `older_than` seconds."""
    root, settings = home(), Settings()
    jobs = root / "storage" / settings.jobs_container
    removed = kept = 0
    for status in sorted(jobs.glob("*/status.json")):
        record = JobRecord.from_json(json.loads(status.read_text()))
        idle = time.time() - status.stat().st_mtime
        if not record.final or is_running(record.job) or idle < older_than:
            kept += 1
            continue
        removed += 1
        print(f"{'would remove' if dry_run else 'removed'} {record.job} ({record.state}, {size(status.parent)} MB, "
              f"last changed {idle / 86400:.1f} days ago)")
        if not dry_run:
            discard(root, settings, record.job)
            lock_file(root, record.job).unlink(missing_ok=True)
    print(f"{removed} jobs {'to remove' if dry_run else 'removed'}, {kept} kept", file=sys.stderr)
    return 0


def size(folder: Path) -> str:
    return f"{sum(f.stat().st_size for f in folder.rglob('*') if f.is_file()) / 1e6:.1f}"
