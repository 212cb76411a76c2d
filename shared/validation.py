"""Streaming validation of chat-format JSONL datasets: the managed service's rules plus our own.

A file is read in binary, one line at a time, never whole: a line over `FileLimits.max_line_bytes` is reported
and skipped in chunks, so memory stays bounded whatever the file holds (besides one digest per distinct row).

Each problem names its file, 1-based line (0 for the whole file) and a stable rule; `str(problem)` is
`file:line: rule: detail`, or `file:line: rule: warning: detail` for a warning (warnings never fail a file).

Rules, errors unless marked:
  unreadable-file                the file is missing, a folder, unreadable, or an AzureML data asset (read only
                                 in AzureML); nothing else is checked
  file-too-large, too-many-rows  the file is refused; reading stops
  encoding                       a line is not UTF-8 (a BOM opening the file and CRLF line ends are fine),
                                 or a content holds an unpaired surrogate escape
  line-too-long                  a line over max_line_bytes (not counting its line end); it is skipped
  blank-line (warning)           an empty or whitespace-only line, skipped (the final newline is not one)
  json, not-an-object            the line is not JSON, or not a JSON object
  messages                       "messages" is missing, not a list, or empty
  message-shape                  a message is not an object with string "role" and "content" (and "name")
  unknown-field (warning)        keys besides "messages", or besides role/content/name in a message: ignored
  unknown-role                   a role other than system, user, assistant
  first-not-system               the first message is not the system prompt
  role-order                     after it, roles do not alternate user, assistant, user...
  empty-content                  a message whose content is empty or whitespace
  single-turn                    NLI, NLU_QA, MATH, SUMMARIZATION: [system, user], or [system, user,
                                 assistant] where the assistant message is a reference answer
  conversation-turns             CONVERSATION: the system message, then complete user/assistant pairs (one
                                 at least)
  options, reference, ...        the task's own rules (`row_problems` in its module under shared/tasks/): NLU_QA
                                 needs at least 2 options, consecutive letters from A; a reference answer must be
                                 able to be right: one of the options (NLU_QA), an NLI label (any case), a number
                                 such as 27, -3, 7.5, 1,000 (MATH)
  duplicate-row (warning)        the same input as an earlier row; both stay rows (ids -0, -1, ...)
  too-few-rows                   fewer valid rows than min_rows (default: the task's)
  empty-file                     no line with content at all
"""

from __future__ import annotations

import codecs
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple

from shared.manifest.load import unreadable
from shared.rows import Message, Row, RowIds
from shared.tasks import Task
from shared.tasks.base import shown_value

MAX_PROBLEMS = 200  # problems kept per file; the rest are only counted
MAX_TRACKED_INPUTS = 1_000_000  # inputs whose first line is remembered, to name it in duplicate-row
ROLES = ("system", "user", "assistant")
MESSAGE_FIELDS = frozenset({"role", "content", "name"})
_SKIP_CHUNK = 1 << 16
_SURROGATE = re.compile("[\ud800-\udfff]")
_JSON_TYPES = {dict: "an object", list: "an array", str: "a string", int: "a number", float: "a number",
               bool: "a boolean", type(None): "null"}


class Severity(StrEnum):
    ERROR = "error"
    WARNING = "warning"


@dataclass(frozen=True, slots=True)
class Problem:
    file: str
    line: int  # 1-based; 0 for the whole file
    rule: str
    detail: str
    severity: Severity = Severity.ERROR

    def __str__(self) -> str:
        marker = "warning: " if self.severity is Severity.WARNING else ""
        return f"{self.file}:{self.line}: {self.rule}: {marker}{self.detail}"


@dataclass(frozen=True)
class FileLimits:
    max_line_bytes: int = 1 << 20
    max_file_bytes: int = 1 << 30
    max_rows: int = 1_000_000


@dataclass
class FileReport:
    """What reading one file found. `errors` and `warnings` count every problem, kept or dropped."""

    file: str
    task: Task
    rows: int = 0  # valid rows
    lines: int = 0
    references: int = 0  # valid rows carrying a reference answer
    duplicates: int = 0
    problems: list[Problem] = field(default_factory=list)  # the first MAX_PROBLEMS
    problems_dropped: int = 0
    errors: int = 0
    warnings: int = 0
    stopped_by: str | None = None  # the rule that stopped reading early, if one did

    @classmethod
    def empty(cls, file: str, task: Task) -> FileReport:
        return cls(file=file, task=task)

    @property
    def ok(self) -> bool:
        return self.errors == 0

    def add(self, line: int, rule: str, detail: str, severity: Severity = Severity.ERROR) -> None:
        """Record a problem of this file; past MAX_PROBLEMS it is only counted."""
        if severity is Severity.ERROR:
            self.errors += 1
        else:
            self.warnings += 1
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(Problem(self.file, line, rule, detail, severity))
        else:
            self.problems_dropped += 1


class _Issue(NamedTuple):
    rule: str
    detail: str
    severity: Severity = Severity.ERROR


class _RawLine(NamedTuple):
    number: int
    body: bytes | None  # without its line end; None when the line is too long
    size: int  # bytes, without the line end


def _json_type(value: object) -> str:
    return _JSON_TYPES.get(type(value), type(value).__name__)


def _skip_rest(stream: BinaryIO) -> int:
    """Read past the rest of the current line in chunks; the bytes skipped, not counting the line end."""
    skipped = 0
    while chunk := stream.readline(_SKIP_CHUNK):
        if chunk.endswith(b"\n"):
            return skipped + len(chunk.rstrip(b"\r\n"))
        skipped += len(chunk)
    return skipped


def _raw_lines(stream: BinaryIO, max_line_bytes: int) -> Iterator[_RawLine]:
    """Each physical line, holding at most max_line_bytes + 2 bytes. A BOM opening the file is dropped."""
    number = 0
    while raw := stream.readline(max_line_bytes + 2):
        number += 1
        if number == 1:
            raw = raw.removeprefix(codecs.BOM_UTF8)
        if raw.endswith(b"\n"):
            body = raw[:-1].removesuffix(b"\r")
            size = len(body)
        else:  # the last line, or a line over the limit
            body = raw
            size = len(raw) + (_skip_rest(stream) if len(raw) > max_line_bytes else 0)
        yield _RawLine(number, body if size <= max_line_bytes else None, size)


def _decode(body: bytes) -> str | _Issue:
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as exc:
        return _Issue("encoding", f"not valid UTF-8: byte 0x{body[exc.start]:02x} at byte {exc.start + 1}")


def _parse(text: str) -> Any:
    """The JSON value of a line, or an _Issue."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        return _Issue("json", f"{exc.msg} at column {exc.colno}")
    except RecursionError:
        return _Issue("json", "nested too deeply")
    except ValueError as exc:  # an integer over Python's digit limit
        return _Issue("json", str(exc).split(":")[0])


def _message_shape(index: int, message: Any) -> _Issue | None:
    if not isinstance(message, dict):
        return _Issue("message-shape", f"message {index} is {_json_type(message)}, expected an object")
    for key in ("role", "content"):
        if not isinstance(message.get(key), str):
            return _Issue("message-shape", f'message {index} has no string "{key}"')
    if not isinstance(message.get("name", ""), str):
        return _Issue("message-shape", f'message {index} has a "name" that is not a string')
    if _SURROGATE.search(message["content"]):
        return _Issue("encoding", f"message {index} content holds an unpaired surrogate escape")
    return None


def _shape(record: Any) -> _Issue | None:
    """The first reason this record is not {"messages": [message objects...]}, if any."""
    if not isinstance(record, dict):
        return _Issue("not-an-object", f"the line is {_json_type(record)}, expected an object")
    messages = record.get("messages")
    if not isinstance(messages, list) or not messages:
        what = "missing" if "messages" not in record else "empty" if messages == [] else _json_type(messages)
        return _Issue("messages", f'"messages" is {what}; expected a non-empty list of messages')
    return next(filter(None, (_message_shape(i, m) for i, m in enumerate(messages, 1))), None)


def _unknown_fields(record: dict[str, Any]) -> list[_Issue]:
    where = [("the row", key) for key in record if key != "messages"]
    where += [(f"message {i}", key) for i, m in enumerate(record["messages"], 1) for key in m
              if key not in MESSAGE_FIELDS]
    return [_Issue("unknown-field", f"{place} has unknown field {shown_value(key)} (ignored)", Severity.WARNING)
            for place, key in where]


def _empty_content(messages: list[Message]) -> list[_Issue]:
    empty = [str(i) for i, m in enumerate(messages, 1) if not m["content"].strip()]
    if not empty:
        return []
    which = f"message {empty[0]} has" if len(empty) == 1 else f"messages {', '.join(empty)} have"
    return [_Issue("empty-content", f"{which} empty content")]


def _roles(messages: list[Message]) -> list[_Issue]:
    """unknown-role, first-not-system or role-order: the first that applies."""
    for i, m in enumerate(messages, 1):
        if m["role"] not in ROLES:
            return [_Issue("unknown-role", f"message {i} has role {shown_value(m['role'])}; "
                                           "expected system, user or assistant")]
    first = messages[0]["role"]
    if first != "system":
        return [_Issue("first-not-system", f"message 1 is {first}; the first must be the system prompt")]
    for i, m in enumerate(messages[1:], 2):
        expected = "user" if i % 2 == 0 else "assistant"
        if m["role"] != expected:
            return [_Issue("role-order", f"message {i} is {m['role']}, expected {expected}: after the system "
                                         "message, user and assistant turns alternate")]
    return []


def _turns(messages: list[Message], task: Task) -> list[_Issue]:
    """The number of turns the task allows, for roles already in order."""
    count, last = len(messages), messages[-1]["role"]
    if task.rules.single_turn and count not in (2, 3):
        return [_Issue("single-turn", f"{task.value} rows are [system, user] and an optional assistant "
                                      f"reference answer; message count: {count}")]
    if not task.rules.single_turn and (count < 3 or last != "assistant"):
        detail = (f"a conversation is the system message then complete user/assistant pairs; message count: "
                  f"{count}, the last is {last}")
        return [_Issue("conversation-turns", detail)]
    return []


def _task_rules(messages: list[Message], task: Task) -> list[_Issue]:
    """The task's own rules (its question, its reference answer) for a single-turn row whose roles are right."""
    if not task.rules.single_turn:
        return []
    reference = messages[2]["content"] if len(messages) == 3 else None
    return [_Issue(rule, detail) for rule, detail in task.rules.row_problems(messages[1]["content"], reference)]


def _check(text: str, task: Task) -> tuple[list[Message], list[_Issue]]:
    """The messages of one decoded line, and everything wrong with it."""
    record = _parse(text)
    if isinstance(record, _Issue):
        return [], [record]
    if shape := _shape(record):
        return [], [shape]
    messages: list[Message] = record["messages"]
    structure = _roles(messages) or _turns(messages, task)
    issues = _unknown_fields(record) + _empty_content(messages)
    return messages, issues + (structure or _task_rules(messages, task))


def _make_row(messages: list[Message], task: Task, ids: RowIds, source: str, line: int) -> Row:
    """A valid line as a Row: a single-turn row's trailing assistant message becomes its reference."""
    has_reference = task.rules.single_turn and messages[-1]["role"] == "assistant"
    kept = messages[:2] if has_reference else messages
    inputs = tuple({"role": m["role"], "content": m["content"]} for m in kept)
    reference = messages[-1]["content"] if has_reference else None
    return Row(id=ids.assign(inputs), source=source, line=line, messages=inputs, reference=reference)


def _valid_lines(stream: BinaryIO, task: Task, report: FileReport, limits: FileLimits
                 ) -> Iterator[tuple[int, list[Message]]]:
    """(line number, messages) of each line without errors; every problem goes to the report."""
    for raw in _raw_lines(stream, limits.max_line_bytes):
        report.lines = raw.number
        if raw.body is None:
            limit = limits.max_line_bytes
            report.add(raw.number, "line-too-long", f"the line is {raw.size:,} bytes; the limit is {limit:,}")
            continue
        if not raw.body.strip():
            report.add(raw.number, "blank-line", "blank line (skipped)", Severity.WARNING)
            continue
        text = _decode(raw.body)
        messages, issues = ([], [text]) if isinstance(text, _Issue) else _check(text, task)
        for issue in issues:
            report.add(raw.number, *issue)
        if all(issue.severity is Severity.WARNING for issue in issues):
            yield raw.number, messages


def _note_duplicate(report: FileReport, line: int, first: int | None) -> None:
    where = f"line {first}" if first is not None else "an earlier row"
    report.duplicates += 1
    report.add(line, "duplicate-row", f"same input as {where} (kept as another row)", Severity.WARNING)


def read_rows(path: Path, task: Task, report: FileReport, *, limits: FileLimits = FileLimits(),
              name: str | None = None) -> Iterator[Row]:
    """Stream the valid rows of a JSONL file in file order, recording every problem into `report`.

    Each row's source is `name` (default: the file name). Invalid lines are not yielded. Reading stops at
    file-too-large (before reading) and too-many-rows. Raises OSError when the file cannot be opened.
    """
    ids = RowIds()
    first_lines: dict[bytes, int] = {}  # input digest → line of its first copy
    with path.open("rb") as stream:
        size = os.fstat(stream.fileno()).st_size
        if size > limits.max_file_bytes:
            limit = limits.max_file_bytes
            report.add(0, "file-too-large", f"the file is {size:,} bytes; the limit is {limit:,}")
            report.stopped_by = "file-too-large"
            return
        for line, messages in _valid_lines(stream, task, report, limits):
            if report.rows >= limits.max_rows:
                report.add(line, "too-many-rows", f"more than {limits.max_rows:,} rows; the rest is not read")
                report.stopped_by = "too-many-rows"
                return
            row = _make_row(messages, task, ids, name or path.name, line)
            digest = bytes.fromhex(row.id[:32])
            if ids.repeats(row.id):
                _note_duplicate(report, line, first_lines.get(digest))
            elif len(first_lines) < MAX_TRACKED_INPUTS:
                first_lines[digest] = line
            report.rows += 1
            if row.reference is not None:
                report.references += 1
            yield row


def validate_file(path: Path, task: Task, *, min_rows: int | None = None, limits: FileLimits = FileLimits(),
                  name: str | None = None) -> FileReport:
    """Read a whole file, then apply the file-level rules. Problems name the file as `name` or its path."""
    report = FileReport.empty(name or str(path), task)
    if problem := unreadable(path):
        report.add(0, "unreadable-file", problem)
        return report
    for _ in read_rows(path, task, report, limits=limits, name=name):
        pass
    return finish_report(report, min_rows)


def finish_report(report: FileReport, min_rows: int | None = None) -> FileReport:
    """The file-level rules, once every row of the file has been read: empty-file and too-few-rows."""
    if report.stopped_by is not None:
        return report
    needed = report.task.rules.min_rows if min_rows is None else min_rows
    if report.rows == 0 and report.errors == 0:
        report.add(0, "empty-file", "the file has no rows")
    elif report.rows < needed:
        report.add(0, "too-few-rows", f"{report.rows} valid rows; {report.task.value} needs at least {needed}")
    return report
