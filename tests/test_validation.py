"""Dataset validation: the shared seed and gold data pass, each broken file reports its rule at its line."""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path

import pytest

from shared.rows import Row
from shared.tasks import Task
from shared.validation import (
    MAX_PROBLEMS,
    FileLimits,
    FileReport,
    Problem,
    Severity,
    read_rows,
    validate_file,
)

SYSTEM = {"role": "system", "content": "You are a helpful assistant."}
NLI_QUESTION = "Premise: A man sleeps.\nHypothesis: A person rests."
QA_QUESTION = "Question: Where is money kept?\n(A) bank\n(B) library\n(C) mall\n(D) park\n(E) pond"


def user(content: str = NLI_QUESTION) -> dict[str, str]:
    return {"role": "user", "content": content}


def assistant(content: str = "entailment") -> dict[str, str]:
    return {"role": "assistant", "content": content}


def line(*messages: object, **extra: object) -> str:
    return json.dumps({"messages": list(messages), **extra})


def good(n: int = 0) -> str:
    """A valid single-turn row, distinct for each n."""
    return line(SYSTEM, user(f"{NLI_QUESTION} ({n})"))


def write(tmp_path: Path, name: str, content: str | bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return path


def found(report: FileReport) -> set[tuple[int, str]]:
    return {(p.line, p.rule) for p in report.problems}


# --- the shared seed and gold data ----------------------------------------------------------------

# file: (rows, duplicate inputs); the folder is the task
SHARED_FILES = {
    "seed/nli/train.jsonl": (512, 0),
    "seed/nli/validation.jsonl": (256, 0),
    "seed/math/train.jsonl": (378, 9),
    "seed/math/validation.jsonl": (42, 1),
    "seed/nlu_qa/train.jsonl": (512, 0),
    "seed/nlu_qa/validation.jsonl": (256, 0),
    "seed/conversation/train.jsonl": (100, 0),
    "seed/conversation/validation.jsonl": (100, 0),
    "seed/summarization/validation.jsonl": (400, 0),
    "gold/nli/train.jsonl": (453, 0),
    "gold/nli/validation.jsonl": (226, 0),
    "gold/math/train.jsonl": (378, 9),
    "gold/math/validation.jsonl": (42, 1),
    "gold/nlu_qa/train.jsonl": (512, 0),
    "gold/nlu_qa/validation.jsonl": (256, 0),
}


@pytest.mark.parametrize("relative", sorted(SHARED_FILES))
def test_shared_data_has_no_errors(shared_data: Path, relative: str) -> None:
    path = shared_data / relative
    report = validate_file(path, Task.parse(path.parent.name))
    rows, duplicates = SHARED_FILES[relative]
    assert report.ok, [str(p) for p in report.problems]
    assert (report.rows, report.lines, report.duplicates) == (rows, rows, duplicates)
    assert {p.rule for p in report.problems} <= {"duplicate-row"}
    assert report.warnings == duplicates
    assert report.references == (rows if relative.startswith("gold/") else 0)


def test_every_shared_file_is_covered(shared_data: Path) -> None:
    assert {str(p.relative_to(shared_data)) for p in shared_data.glob("*/*/*.jsonl")} == set(SHARED_FILES)


def test_seed_math_duplicates_name_their_first_line(shared_data: Path) -> None:
    report = validate_file(shared_data / "seed/math/train.jsonl", Task.MATH)
    duplicates = [p for p in report.problems if p.rule == "duplicate-row"]
    assert len(duplicates) == 9 and report.rows == 378
    assert all(p.severity is Severity.WARNING and "same input as line " in p.detail for p in duplicates)


# --- the broken corpus ----------------------------------------------------------------------------

# name: (task, file lines, the (line, rule) problems expected: exactly these)
BROKEN: dict[str, tuple[Task, list[str | bytes], set[tuple[int, str]]]] = {
    "non-utf8": (Task.NLI, [good(), b'{"messages": [{"role": "system", "content": "caf\xe9"}]}'],
                 {(2, "encoding")}),
    "surrogate-escape": (Task.NLI, [good(), line(SYSTEM, user("\ud800"))], {(2, "encoding")}),
    "blank-lines": (Task.NLI, [good(1), "", good(2), "   "], {(2, "blank-line"), (4, "blank-line")}),
    "invalid-json": (Task.NLI, [good(), '{"messages": [}'], {(2, "json")}),
    "deep-json": (Task.NLI, ["[" * 100_000], {(1, "json")}),
    "huge-integer": (Task.NLI, ['{"messages": ' + "9" * 5000 + "}"], {(1, "json")}),
    "json-array": (Task.NLI, [good(), "[1, 2]"], {(2, "not-an-object")}),
    "missing-messages": (Task.NLI, ['{"msgs": []}'], {(1, "messages")}),
    "messages-not-a-list": (Task.NLI, ['{"messages": "hi"}'], {(1, "messages")}),
    "messages-empty": (Task.NLI, ['{"messages": []}'], {(1, "messages")}),
    "message-not-object": (Task.NLI, [line(SYSTEM, "hello")], {(1, "message-shape")}),
    "content-not-string": (Task.NLI, [line(SYSTEM, {"role": "user", "content": 3})], {(1, "message-shape")}),
    "role-missing": (Task.NLI, [line(SYSTEM, {"content": "hi"})], {(1, "message-shape")}),
    "name-not-string": (Task.NLI, [line(SYSTEM, {**user(), "name": 1})], {(1, "message-shape")}),
    "unknown-fields": (Task.NLI, [line(SYSTEM, {**user(), "weight": 1}, id=7)],
                       {(1, "unknown-field")}),
    "unknown-role": (Task.NLI, [line(SYSTEM, {"role": "tool", "content": "x"})], {(1, "unknown-role")}),
    "missing-system": (Task.NLI, [line(user(), assistant())], {(1, "first-not-system")}),
    "bad-order": (Task.CONVERSATION, [line(SYSTEM, user(), user(), assistant())], {(1, "role-order")}),
    "assistant-first": (Task.NLI, [line(SYSTEM, assistant(), user())], {(1, "role-order")}),
    "second-system": (Task.NLI, [line(SYSTEM, SYSTEM)], {(1, "role-order")}),
    "empty-content": (Task.NLI, [good(), line(SYSTEM, user("  \n"))], {(2, "empty-content")}),
    "conversation-two-messages": (Task.CONVERSATION, [line(SYSTEM, user())], {(1, "conversation-turns")}),
    "conversation-ends-with-user": (Task.CONVERSATION, [line(SYSTEM, user(), assistant("a"), user())],
                                    {(1, "conversation-turns")}),
    "single-turn-extra-turns": (Task.NLI, [line(SYSTEM, user(), assistant(), user(), assistant())],
                                {(1, "single-turn")}),
    "single-turn-system-only": (Task.MATH, [line(SYSTEM)], {(1, "single-turn")}),
    "nlu-qa-without-options": (Task.NLU_QA, [line(SYSTEM, user("Where is money kept?"))], {(1, "options")}),
    "nlu-qa-options-gap": (Task.NLU_QA, [line(SYSTEM, user("Where?\n(A) bank\n(C) mall"))], {(1, "options")}),
    "nlu-qa-reference-f": (Task.NLU_QA, [line(SYSTEM, user(QA_QUESTION), assistant("F"))],
                           {(1, "reference")}),
    "nli-reference-maybe": (Task.NLI, [line(SYSTEM, user(), assistant("maybe"))], {(1, "reference")}),
    "math-reference-words": (Task.MATH, [line(SYSTEM, user("2+2?"), assistant("four"))], {(1, "reference")}),
    "duplicate": (Task.NLI, [good(1), good(2), good(1)], {(3, "duplicate-row")}),
}


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_broken_file_reports_its_rule_at_its_line(tmp_path: Path, name: str) -> None:
    task, lines, expected = BROKEN[name]
    content = b"".join((x if isinstance(x, bytes) else x.encode()) + b"\n" for x in lines)
    path = write(tmp_path, f"{name}.jsonl", content)
    report = validate_file(path, task, min_rows=0)
    assert found(report) == expected, [str(p) for p in report.problems]
    assert all(str(p).startswith(f"{path}:{p.line}: {p.rule}: ") for p in report.problems)
    assert report.lines == len(lines)


@pytest.mark.parametrize(("task", "answer"), [
    (Task.NLI, "Entailment"), (Task.NLI, " neutral\n"), (Task.NLU_QA, "C"), (Task.SUMMARIZATION, "Short."),
    (Task.MATH, "27"), (Task.MATH, "-3"), (Task.MATH, "7.5"), (Task.MATH, "1,000"),
])
def test_good_reference_answers_are_accepted(tmp_path: Path, task: Task, answer: str) -> None:
    question = QA_QUESTION if task is Task.NLU_QA else "Question?"
    path = write(tmp_path, "ok.jsonl", line(SYSTEM, user(question), assistant(answer)) + "\n")
    report = validate_file(path, task, min_rows=1)
    assert report.ok and not report.problems and report.references == 1


def test_bom_and_crlf_are_accepted(tmp_path: Path) -> None:
    path = write(tmp_path, "bom.jsonl", b"\xef\xbb\xbf" + f"{good(1)}\r\n{good(2)}\r\n".encode())
    report = validate_file(path, Task.NLI, min_rows=2)
    assert report.problems == [] and report.rows == 2


def test_problem_format_names_file_line_rule_and_marks_warnings() -> None:
    assert str(Problem("a.jsonl", 3, "json", "bad")) == "a.jsonl:3: json: bad"
    warning = Problem("a.jsonl", 0, "blank-line", "blank", Severity.WARNING)
    assert str(warning) == "a.jsonl:0: blank-line: warning: blank"


def test_details_are_short_and_never_the_whole_line(tmp_path: Path) -> None:
    role = "r" * 5000
    path = write(tmp_path, "long.jsonl", line(SYSTEM, {"role": role, "content": "x"}) + "\n")
    [problem] = validate_file(path, Task.NLI, min_rows=0).problems
    assert problem.rule == "unknown-role" and len(problem.detail) < 200


def test_json_error_names_message_and_column(tmp_path: Path) -> None:
    path = write(tmp_path, "bad.jsonl", '{"messages": [}\n')
    [problem] = validate_file(path, Task.NLI, min_rows=0).problems
    assert "column 15" in problem.detail


def test_too_few_rows(tmp_path: Path) -> None:
    path = write(tmp_path, "few.jsonl", "".join(good(n) + "\n" for n in range(3)))
    report = validate_file(path, Task.NLI)
    assert found(report) == {(0, "too-few-rows")} and "65" in report.problems[0].detail
    assert validate_file(path, Task.NLI, min_rows=3).ok


@pytest.mark.parametrize("content", [b"", b"\n\n", b"\xef\xbb\xbf"])
def test_empty_file(tmp_path: Path, content: bytes) -> None:
    report = validate_file(write(tmp_path, "empty.jsonl", content), Task.NLI)
    assert (0, "empty-file") in found(report) and (0, "too-few-rows") not in found(report)
    assert not report.ok


def test_file_of_broken_lines_is_too_few_rows_not_empty(tmp_path: Path) -> None:
    report = validate_file(write(tmp_path, "junk.jsonl", "x\ny\n"), Task.NLI)
    assert found(report) == {(1, "json"), (2, "json"), (0, "too-few-rows")}


def test_over_long_line_is_skipped_and_the_next_one_parsed(tmp_path: Path) -> None:
    path = write(tmp_path, "long.jsonl", f"{good(1)}\n{'x' * 500}\n{good(2)}\n")
    report = validate_file(path, Task.NLI, min_rows=1, limits=FileLimits(max_line_bytes=200))
    assert found(report) == {(2, "line-too-long")} and report.rows == 2 and report.lines == 3
    assert "500 bytes" in report.problems[0].detail


def test_line_at_the_limit_is_fine_with_either_line_end(tmp_path: Path) -> None:
    text = good()
    for end in ("\n", "\r\n", ""):
        path = write(tmp_path, "edge.jsonl", text + end)
        report = validate_file(path, Task.NLI, min_rows=1, limits=FileLimits(max_line_bytes=len(text)))
        assert report.problems == [] and report.rows == 1
        report = validate_file(path, Task.NLI, min_rows=0, limits=FileLimits(max_line_bytes=len(text) - 1))
        assert found(report) == {(1, "line-too-long")}


def test_five_megabyte_line_is_reported_and_streamed_past(tmp_path: Path) -> None:
    big = line(SYSTEM, user("y" * (5 << 20)))
    path = write(tmp_path, "big.jsonl", f"{good(1)}\n{big}\n{good(2)}")
    tracemalloc.start()
    try:
        report = validate_file(path, Task.NLI, min_rows=1)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert found(report) == {(2, "line-too-long")} and report.rows == 2 and report.lines == 3
    assert peak < 3 << 20  # the 5 MB line was never held whole


def test_too_many_rows_stops_reading(tmp_path: Path) -> None:
    path = write(tmp_path, "many.jsonl", "".join(good(n) + "\n" for n in range(5)))
    report = validate_file(path, Task.NLI, min_rows=1, limits=FileLimits(max_rows=2))
    assert found(report) == {(3, "too-many-rows")} and report.rows == 2 and report.lines == 3
    assert report.stopped_by == "too-many-rows"


def test_file_too_large_is_refused_before_reading(tmp_path: Path) -> None:
    path = write(tmp_path, "large.jsonl", good() + "\n")
    report = validate_file(path, Task.NLI, limits=FileLimits(max_file_bytes=10))
    assert found(report) == {(0, "file-too-large")} and report.rows == 0 and report.lines == 0


def test_problems_are_capped_but_counted(tmp_path: Path) -> None:
    extra = 30
    path = write(tmp_path, "junk.jsonl", "x\n" * (MAX_PROBLEMS + extra))
    report = validate_file(path, Task.NLI, min_rows=1)
    assert len(report.problems) == MAX_PROBLEMS and report.problems_dropped == extra + 1  # + too-few-rows
    assert report.errors == MAX_PROBLEMS + extra + 1


def test_name_replaces_the_path_in_problems(tmp_path: Path) -> None:
    path = write(tmp_path, "f.jsonl", "x\n")
    report = validate_file(path, Task.NLI, min_rows=0, name="train.jsonl")
    assert str(report.problems[0]).startswith("train.jsonl:1: json: ")


# --- read_rows ------------------------------------------------------------------------------------

def rows_of(tmp_path: Path, task: Task, lines: list[str], name: str | None = None
            ) -> tuple[list[Row], FileReport]:
    path = write(tmp_path, "rows.jsonl", "".join(x + "\n" for x in lines))
    report = FileReport.empty(str(path), task)
    return list(read_rows(path, task, report, name=name)), report


def test_read_rows_ids_lines_and_source(tmp_path: Path) -> None:
    rows, report = rows_of(tmp_path, Task.NLI, [good(1), "oops", good(2), good(1)], name="train")
    assert [r.line for r in rows] == [1, 3, 4]
    assert {r.source for r in rows} == {"train"}
    first, _, again = rows
    assert first.id.endswith("-0") and again.id.endswith("-1")
    assert first.id.rsplit("-", 1)[0] == again.id.rsplit("-", 1)[0] != rows[1].id.rsplit("-", 1)[0]
    assert (report.rows, report.duplicates, report.lines) == (3, 1, 4)


def test_read_rows_source_defaults_to_the_file_name(tmp_path: Path) -> None:
    rows, _ = rows_of(tmp_path, Task.NLI, [good()])
    assert rows[0].source == "rows.jsonl"


def test_read_rows_splits_off_the_reference(tmp_path: Path) -> None:
    lines = [line(SYSTEM, user(), assistant("neutral")), line(SYSTEM, user())]
    rows, report = rows_of(tmp_path, Task.NLI, lines)
    with_answer, without = rows
    assert with_answer.reference == "neutral" and without.reference is None
    assert with_answer.messages == (SYSTEM, user()) == without.messages
    assert with_answer.id.rsplit("-", 1)[0] == without.id.rsplit("-", 1)[0]  # same input
    assert report.references == 1


def test_read_rows_keeps_every_conversation_turn(tmp_path: Path) -> None:
    turns = [SYSTEM, user("hi"), assistant("hello"), user("bye"), assistant("see you")]
    rows, report = rows_of(tmp_path, Task.CONVERSATION, [line(*turns)])
    assert rows[0].messages == tuple(turns) and rows[0].reference is None and report.references == 0


def test_read_rows_drops_unknown_fields_from_messages(tmp_path: Path) -> None:
    rows, report = rows_of(tmp_path, Task.NLI, [line(SYSTEM, {**user(), "name": "ann", "extra": 1})])
    assert rows[0].messages == (SYSTEM, user())
    assert found(report) == {(1, "unknown-field")} and report.ok


def test_read_rows_streams(tmp_path: Path) -> None:
    path = write(tmp_path, "s.jsonl", "".join(good(n) + "\n" for n in range(10)))
    report = FileReport.empty(str(path), Task.NLI)
    rows = read_rows(path, Task.NLI, report)
    assert next(rows).line == 1 and report.lines == 1
    rows.close()
