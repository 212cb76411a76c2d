"""The shard and result files of a job: the one codec every step writes and reads them with.

A shard (`shards/NNNNN.jsonl`) holds rows to label, one JSON object a line: the row and the split it goes to. Its
result (`results/NNNNN.jsonl`) is a header line with the shard's counts, then one line per row in shard order: the
teacher's answers, or why the row was rejected. Joined, they are every labelled row of the job.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from shared.jobs.paths import JobPaths
from shared.ports import BlobStore
from shared.reasons import Reason
from shared.redaction import redact
from shared.rows import Row
from shared.tasks.base import Accepted, Rejected


def shard_line(split: str, row: Row) -> str:
    """One row of a shard file (without its newline)."""
    item = {"split": split, "id": row.id, "source": row.source, "line": row.line, "messages": row.messages,
            "reference": row.reference}  # dataclasses.asdict deep-copies: a quarter of ingest's time
    return json.dumps(item, ensure_ascii=False)


def decode_shard(data: bytes) -> list[tuple[str, Row]]:
    """(split, row) for each line of a shard file."""
    rows = []
    for line in data.decode("utf-8").splitlines():
        item = json.loads(line)
        split = item.pop("split")
        item["messages"] = tuple(item["messages"])
        rows.append((split, Row(**item)))
    return rows


@dataclass(frozen=True, slots=True)
class ResultHeader:
    """A shard result's counts: rows, the tokens paid, the teacher's 429s, and what the response cache saved."""

    shard: int
    accepted: int = 0
    rejected: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    throttled: int = 0
    cache_hits: int = 0
    tokens_saved: int = 0


@dataclass(frozen=True, slots=True)
class RowResult:
    """One row's line in a shard result: every answer accepted, or the first rejection."""

    id: str
    split: str
    source: str
    line: int
    tokens: int  # paid for this row
    answers: tuple[Accepted, ...] | None = None
    rejection: Rejected | None = None
    agreement: float | None = None  # prompt.samples: the share of the teacher's samples that gave the kept answer

    def to_json(self) -> dict[str, Any]:
        item: dict[str, Any] = {"id": self.id, "split": self.split, "source": self.source, "line": self.line,
                                "tokens": self.tokens}
        if self.agreement is not None:
            item["agreement"] = self.agreement
        if self.answers is not None:
            item["answers"] = [{"answer": a.answer, "reasoning": a.reasoning} for a in self.answers]
        elif self.rejection is not None:
            item.update(reason=self.rejection.reason.value, detail=self.rejection.detail,
                        excerpt=self.rejection.excerpt)
        return item

    @classmethod
    def from_json(cls, item: dict[str, Any]) -> RowResult:
        answers = rejection = None
        if "answers" in item:
            answers = tuple(Accepted(a["answer"], a["reasoning"]) for a in item["answers"])
        else:
            rejection = Rejected(Reason(item["reason"]), item["detail"], item["excerpt"])
        return cls(item["id"], item["split"], item["source"], item["line"], item.get("tokens", 0), answers,
                   rejection, item.get("agreement"))

    def rejection_record(self) -> dict[str, Any]:
        """Its line in rejected.jsonl."""
        assert self.rejection is not None
        record = {"id": self.id, "split": self.split, "source": self.source, "line": self.line,
                  "reason": self.rejection.reason.value, "detail": self.rejection.detail,
                  "excerpt": self.rejection.excerpt}
        return record if self.agreement is None else {**record, "agreement": self.agreement}


def encode_result(header: ResultHeader, rows: list[RowResult]) -> bytes:
    lines = [json.dumps(asdict(header)), *(json.dumps(r.to_json(), ensure_ascii=False) for r in rows)]
    return redact("\n".join(lines) + "\n").encode("utf-8")


def decode_result(data: bytes) -> tuple[ResultHeader, list[RowResult]]:
    first, *items = (json.loads(line) for line in data.splitlines())
    known = {f.name for f in fields(ResultHeader)}
    header = ResultHeader(**{key: value for key, value in first.items() if key in known})
    return header, [RowResult.from_json(item) for item in items]


def stopped_rows(data: bytes) -> set[str]:
    """The ids of the rows of a shard result that the budget kept from the teacher."""
    _, rows = decode_result(data)
    return {r.id for r in rows if r.rejection is not None and r.rejection.reason is Reason.BUDGET}


def merge_result(old: bytes, new: bytes) -> bytes:
    """An earlier result with its `budget` rows replaced by their rows in `new` (a result of just those rows);
    tokens, 429s and cache hits are both rounds'."""
    old_header, old_rows = decode_result(old)
    new_header, new_rows = decode_result(new)
    fresh = {r.id: r for r in new_rows}
    rows = [fresh.get(r.id, r) if r.rejection is not None and r.rejection.reason is Reason.BUDGET else r
            for r in old_rows]
    summed = {f.name: getattr(old_header, f.name) + getattr(new_header, f.name) for f in fields(ResultHeader)
              if f.name not in ("shard", "accepted", "rejected")}
    header = replace(old_header, accepted=sum(r.answers is not None for r in rows),
                     rejected=sum(r.answers is None for r in rows), **summed)
    return encode_result(header, rows)


@dataclass(frozen=True, slots=True)
class LabelledShard:
    """A shard joined with its result: each row with what the teacher made of it, in shard order."""

    index: int
    header: ResultHeader
    rows: list[tuple[Row, RowResult]]


def labelled_shards(store: BlobStore, paths: JobPaths, shards: int) -> Iterator[LabelledShard]:
    """Every shard of a job joined with its result, one at a time; LookupError for a shard not labelled yet."""
    for index in range(shards):
        rows = decode_shard(_blob(store, paths.shard(index)))
        header, results = decode_result(_blob(store, paths.result(index)))
        for (_, row), result in zip(rows, results, strict=True):
            if result.id != row.id:
                raise ValueError(f"shard {index}: result for {result.id} where {row.id} was expected")
        yield LabelledShard(index, header, [(row, result) for (_, row), result in zip(rows, results, strict=True)])


def _blob(store: BlobStore, path: str) -> bytes:
    blob = store.read(path)
    if blob is None:
        raise LookupError(f"{path} does not exist: the job has not finished labelling")
    return blob.data
