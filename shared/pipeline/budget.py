"""A job's token budget (`limits.budget_tokens`, `--budget-tokens`): stop teacher calls once it is spent, go on later.

Spent tokens are kept per row in `jobs/<job>/budget/NNNNN.json` (one per shard) and per shard in
`jobs/<job>/budget.json`, both updated by compare-and-swap after each row. A row is keyed by its id, so a redelivered
shard (a worker killed mid-shard) that asks the teacher about a row again replaces that row's count instead of adding
to it, and the rows the killed worker paid for stay counted: each row's tokens are counted once.

Before a row's first teacher call the worker checks the job's spent tokens against the budget; once they reach it,
the row is not sent and ends rejected with reason `budget`. Calls already in flight finish, and a worker sees the
others' spending only once they have published it, so the job can go over its budget by about the calls in flight on
all workers (`limits.concurrency` each) plus what the others spent since their last ledger update.

When every shard is in and some row was stopped by the budget, the job is assembled from what was labelled and
stops in the state `budget spent`, with the reason in its record. The same job run again with a higher budget (a new
manifest upload, or `distill run` with a raised `--budget-tokens`) resumes: only the shards holding `budget` rows are
sent again, as a new round whose message ids differ from the first, and only their `budget` rows reach the teacher.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from shared.jobs.blobs import dumps, read_json, update_json
from shared.jobs.paths import JobPaths
from shared.jobs.record import JobState, update_record
from shared.jobs.shards import stopped_rows
from shared.manifest.model import Manifest
from shared.ports import BlobStore
from shared.reasons import Reason
from shared.tasks.base import Rejected

log = logging.getLogger(__name__)


def spent(store: BlobStore, paths: JobPaths) -> int:
    """Tokens the job has spent so far, each row counted once."""
    ledger = read_json(store, paths.budget_ledger) or {}
    return sum(ledger.get("shards", {}).values())


class Budget:
    """One shard delivery's view of its job's budget; thread-safe (rows finish on worker threads)."""

    def __init__(self, store: BlobStore, paths: JobPaths, shard: int, tokens: int) -> None:
        self.store, self.paths, self.shard, self.tokens = store, paths, shard, tokens
        self._lock = threading.Lock()
        self._rows: dict[str, int] = (read_json(store, paths.budget_rows(shard)) or {}).get("rows", {})
        ledger = read_json(store, paths.budget_ledger) or {}
        self._others = sum(v for k, v in ledger.get("shards", {}).items() if k != str(shard))
        self._publishing = self._dirty = False

    @classmethod
    def for_shard(cls, store: BlobStore, paths: JobPaths, shard: int, manifest: Manifest) -> Budget | None:
        """The shard's budget, or None when the job has none."""
        tokens = manifest.limits.budget_tokens
        return None if tokens is None else cls(store, paths, shard, tokens)

    @property
    def spent(self) -> int:
        with self._lock:
            return self._others + sum(self._rows.values())

    def allows(self) -> bool:
        """Whether another row may go to the teacher."""
        return self.spent < self.tokens

    def rejection(self) -> Rejected:
        return Rejected(Reason.BUDGET, f"the job's token budget of {self.tokens:,} was spent before this row "
                                       "was sent", "")

    def count(self, row_id: str, tokens: int) -> None:
        """Count a finished row's tokens at once, in memory (a repeat of the same row replaces its count)."""
        with self._lock:
            self._rows[row_id] = tokens

    def publish(self) -> None:
        """Write the counted rows to the ledgers and read the other shards' totals back (blocking: call it in a thread).

        Publishes coalesce: while one is writing, others only ask it to go round once more, so rows finishing faster
        than storage writes still reach the ledger soon, in few writes.
        """
        with self._lock:
            self._dirty = True
            if self._publishing:
                return
            self._publishing = True
        try:
            while True:
                with self._lock:
                    if not self._dirty:
                        self._publishing = False
                        return
                    self._dirty = False
                self._write()
        except BaseException:
            with self._lock:
                self._publishing = False
            raise

    def _write(self) -> None:
        """Merge this delivery's rows into the shard's row ledger, then its total into the job's ledger.

        Rows paid by an earlier delivery (a worker killed mid-shard) stay counted, once; the totals are taken at each
        compare-and-swap attempt, so a write that lands last never writes a stale total.
        """
        def merge(ledger: dict[str, Any]) -> dict[str, Any] | None:
            rows = ledger.setdefault("rows", {})
            with self._lock:
                mine = dict(self._rows)
            if all(rows.get(k) == v for k, v in mine.items()):
                return None
            rows.update(mine)
            return ledger

        rows = update_json(self.store, self.paths.budget_rows(self.shard), merge, create=True).get("rows", {})
        with self._lock:
            self._rows.update({k: v for k, v in rows.items() if k not in self._rows})
            total = sum(self._rows.values())
        key = str(self.shard)

        def put(ledger: dict[str, Any]) -> dict[str, Any] | None:
            shards = ledger.setdefault("shards", {})
            if shards.get(key, -1) >= total:
                return None
            shards[key] = total
            return ledger

        ledger = update_json(self.store, self.paths.budget_ledger, put, create=True)
        with self._lock:
            self._others = sum(v for k, v in ledger.get("shards", {}).items() if k != key)


# --- the job: continue with a higher budget ------------------------------------------------------------
def resume(store: BlobStore, paths: JobPaths, manifest: Manifest) -> tuple[int, list[int]] | None:
    """Put a `budget spent` job back to labelling under this manifest's budget, as a new round.

    Returns the round and the shards to send again, or None when that budget is spent already (or the job has
    moved on).
    """
    budget = manifest.limits.budget_tokens
    used = spent(store, paths)
    if budget is not None and budget <= used:
        log.info("job %s: the budget of %d tokens is spent (%d used); not resuming", paths.job, budget, used)
        return None
    stored = read_json(store, paths.manifest)
    stored.setdefault("limits", {})["budget_tokens"] = budget
    store.write(paths.manifest, dumps(stored))
    again = [index for index in range(read_json(store, paths.plan)["shards"])
             if stopped_rows(store.read(paths.result(index)).data)]
    record = update_record(store, paths, lambda r: r.resume_round(again))
    return (record.round or 0, again) if record.state is JobState.LABELING else None
