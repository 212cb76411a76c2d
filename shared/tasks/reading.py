"""Reading answers out of teacher replies, whatever the task: lenient JSON, \\boxed{...}, "Answer: X" lines, and the
LaTeX, markdown and quotes answers come wrapped in. Pure text tools; each task module decides what an answer is.

Choices made here:
- JSON is read leniently: bare, fenced, amid prose, single-quoted, with trailing commas, Python literals or bare
  words; a quoted "answer": value is still read from JSON too broken to parse.
- Code blocks with a language tag (```python) are skipped when reading answers from text: code is not run.
"""

from __future__ import annotations

import ast
import json
import re
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass

SHORT_WORDS = 5  # a line this short may be the answer itself ("B) populated areas", "7 apples")
WRAPPERS = " \t\r\n*_`\"'“”‘’$"  # markdown, quotes and $ around an answer
CODE_BLOCK = re.compile(
    r"```[ \t]*(?!(?:json|text|txt|plaintext|output|markdown|md)\b)[\w+#-]+[^\n]*\n.*?(?:```|$)",
    re.IGNORECASE | re.DOTALL)

# JSON and its near misses
ANSWER_KEYS = ("finalanswer", "answer", "answerchoice", "choice", "label")  # keys without case, " ", _ or -
REASONING_KEYS = ("reasoning", "reason", "rationale", "explanation")
_KEY_NOISE = re.compile(r"[\s_-]")
_MAX_JSON_ATTEMPTS = 50  # spans parsed per reply at most, so a degenerate reply still parses quickly
_MAX_JSON_CHARS = 50_000
_LATEX_IN_JSON = re.compile(  # \frac, \boxed, \text... that JSON would read as the escapes \f, \b, \t...
    r"(?<!\\)\\(?=(?:boxed|binom|beta|frac|tfrac|times|text[a-z]*|theta|neq|right[a-z]*)(?![a-zA-Z]))")
_ESCAPE = re.compile(r"\\(.)", re.DOTALL)
_PYTHON_ESCAPES = frozenset("\\'\"abfnrtvxNuU01234567\n")
_JSON_WORDS = {"true": True, "false": False, "null": None}
_NULLS = ("null", "None")
_BARE_QUOTE = re.compile(r'(?<!\\)"')


def quoted_field(names: str) -> re.Pattern[str]:
    """`"name": value` as broken JSON still shows it; a quoted value ends where a next key or the object does,
    so quotes inside it need no escaping."""
    return re.compile(
        rf"""["'](?:{names})["']\s*:\s*"""
        rf"""(?:(?P<quote>["'])(?P<quoted>.*?)(?P=quote)(?=\s*(?:[}}\]]|$|,\s*(?:["'{{\[}}\]]|$)))"""
        rf"""|(?P<bare>[^\s"',}}\]][^,}}\]\n]*))""",
        re.IGNORECASE | re.DOTALL)


_ANSWER_FIELD = quoted_field(r"final[ _]?answer|answer[ _]?choice|answer|choice|label")
_REASONING_FIELD = quoted_field(r"reasoning|reason|rationale|explanation")

# answers stated in text
_BOXED = re.compile(r"\\(?:boxed|fbox)\s*\{")
_ANSWER_LINE = re.compile(
    r"\b(?:the\s+)?(?:(?:final|correct|right)\s+)?(?:answer|label)\b[*_ \t]*"
    r"(?:is\b|would\s+be\b|should\s+be\b|will\s+be\b|:)[*_\s:]*(?P<value>[^\n]+)",
    re.IGNORECASE)
_LINE_LEAD = " \t*_#>-"  # markdown that may open the line of an "Answer:"
_LATEX_WRAPPER = re.compile(r"\\(?:boxed|fbox|text|textbf|textit|textrm|mathrm|mathbf|mbox)\s*\{([^{}]*)\}")
_LATEX_FRACTION = re.compile(r"\\[dt]?frac\s*\{([^{}]*)\}\s*\{([^{}]*)\}")
_LATEX_NOISE = re.compile(r"\\[,;:! ]|\\(?:left|right)\b|\\[()\[\]]|\$\$")


@dataclass(frozen=True, slots=True)
class Found:
    """An answer the reply states outright, not yet checked."""

    value: str
    reasoning: str | None = None


def excerpt(text: str | None, limit: int = 200) -> str:
    """`text` on one line with white space collapsed, cut to `limit` characters ending in "…" when longer."""
    if limit < 1:
        raise ValueError(f"limit must be at least 1, not {limit}")
    flat = " ".join((text or "").split())
    return flat if len(flat) <= limit else flat[: limit - 1].rstrip() + "…"


def stated_answer(text: str, prose: str) -> Found | None:
    """The answer a reply states outright: in JSON (parsed, else salvaged), in the last \\boxed{...}, or on the last
    "Answer: X" line; `prose` is the text without code blocks."""
    return _json_answer(text) or _salvaged_answer(text) or _boxed_answer(prose) or _answer_line(prose)


def is_bare(prose: str) -> bool:
    """One short line that is not JSON: the answer itself, however wrong ("maybe", "seven")."""
    return bool(prose) and "\n" not in prose and len(prose.split()) <= SHORT_WORDS and prose[0] not in "{["


def _json_answer(text: str) -> Found | None:
    """The answer (and reasoning) of the last JSON object in the reply that has an answer."""
    for value in reversed(json_values(text)):
        for obj in objects(value):
            answer = text_of(field(obj, ANSWER_KEYS))
            if answer:
                return Found(answer, text_of(field(obj, REASONING_KEYS)) or None)
    return None


def _salvaged_answer(text: str) -> Found | None:
    """The last "answer": value of JSON too broken to parse, with the last "reasoning" if one can be read."""
    answers = [answer for answer in field_values(_ANSWER_FIELD, text) if answer]
    if not answers:
        return None
    reasonings = [reasoning for reasoning in field_values(_REASONING_FIELD, text) if reasoning]
    return Found(answers[-1], reasonings[-1] if reasonings else None)


def _boxed_answer(prose: str) -> Found | None:
    """The content of the last \\boxed{...} that closes, nested braces allowed; the reply around it is reasoning."""
    closing = _closing_braces(prose)
    for match in reversed(list(_BOXED.finditer(prose))):
        end = closing.get(match.end() - 1)
        if end is not None and prose[match.end():end].strip():
            return Found(prose[match.end():end], surrounding_reasoning(prose))
    return None


def _closing_braces(text: str) -> dict[int, int]:
    """Where each "{" of the text closes, found in one pass."""
    closing: dict[int, int] = {}
    opened: list[int] = []
    for index, char in enumerate(text):
        if char == "{":
            opened.append(index)
        elif char == "}" and opened:
            closing[opened.pop()] = index
    return closing


def _answer_line(prose: str) -> Found | None:
    """The last "Answer: X" / "the answer is X"; the text before it is reasoning when it opens its line, else the
    whole reply is ("28 / 4 gives 7, so the answer is 7.")."""
    matches = list(_ANSWER_LINE.finditer(prose))
    if not matches:
        return None
    match = matches[-1]
    line_start = prose.rfind("\n", 0, match.start()) + 1
    opens_line = not prose[line_start:match.start()].strip(_LINE_LEAD)
    return Found(match.group("value"),
                 (prose[:line_start].strip() or None) if opens_line else surrounding_reasoning(prose))


def surrounding_reasoning(prose: str) -> str | None:
    """A reply's text as the reasoning of an answer stated inside it, unless it is no more than a short line."""
    return None if is_bare(prose) else prose


# --- JSON, leniently ---------------------------------------------------------------------------------------
def json_values(text: str) -> list[object]:
    """Every outermost {...} or [...] of the text that parses and holds a key, in order of appearance."""
    values: list[object] = []
    covered, attempts = -1, 0
    for start, end in _bracket_spans(text):
        if start < covered or end - start > _MAX_JSON_CHARS or text.find(":", start, end) < 0:
            continue  # inside a value already read, too long for a reply's JSON, or without any key
        attempts += 1
        if attempts > _MAX_JSON_ATTEMPTS:
            break
        if (value := _load_lenient(text[start:end])) is not None:
            values.append(value)
            covered = end
    return values


def _bracket_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) of every balanced {...} and [...], outer before inner, in one pass (so a stray bracket in
    prose cannot hide the JSON after it); brackets in double-quoted strings inside them do not count."""
    spans: list[tuple[int, int]] = []
    opened: list[tuple[str, int]] = []  # (the closing bracket awaited, where it opened)
    in_string = escaped = False
    for index, char in enumerate(text):
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"' and opened:
            in_string = True
        elif char in "{[":
            opened.append(("}" if char == "{" else "]", index))
        elif opened and char == opened[-1][0]:
            spans.append((opened.pop()[1], index + 1))
    return sorted(spans, key=lambda span: (span[0], -span[1]))


def _load_lenient(snippet: str) -> object | None:
    """JSON, or the near-JSON small models write: single quotes, trailing commas, Python literals, bare
    words; None when it is neither."""
    snippet = _LATEX_IN_JSON.sub(r"\\\\", snippet)
    try:
        return json.loads(snippet, strict=False)  # strict=False: raw newlines inside strings
    except (ValueError, RecursionError):
        return _python_literal(snippet)  # trailing commas too


class _BareWords(ast.NodeTransformer):
    """Reads JSON's true/false/null, and any other bare word as its own text ({answer: B})."""

    def visit_Name(self, node: ast.Name) -> ast.Constant:
        return ast.copy_location(ast.Constant(_JSON_WORDS.get(node.id, node.id)), node)


def _python_literal(snippet: str) -> object | None:
    """The snippet read as a Python literal, or None. Stray backslashes (LaTeX) are kept as written."""
    escaped = _ESCAPE.sub(lambda m: m[0] if m[1] in _PYTHON_ESCAPES else "\\" + m[0], snippet)
    try:
        return ast.literal_eval(_BareWords().visit(ast.parse(escaped, mode="eval")))
    except (SyntaxError, ValueError, TypeError, MemoryError, RecursionError):
        return None


def objects(value: object) -> Iterator[dict[object, object]]:
    """The JSON objects inside a parsed value, outer before inner."""
    queue = deque([value])
    while queue:
        item = queue.popleft()
        if isinstance(item, dict):
            yield item
            queue.extend(item.values())
        elif isinstance(item, list | tuple):
            queue.extend(item)


def field(obj: dict[object, object], names: tuple[str, ...]) -> object:
    """The value of the first of `names` the object has; keys compare without case, spaces, "_" or "-"."""
    keyed = {_KEY_NOISE.sub("", str(key).lower()): value for key, value in obj.items()}
    return next((keyed[name] for name in names if name in keyed), None)


def text_of(value: object) -> str:
    """A JSON value as text: numbers as Python writes them (7.0 -> "7.0"), lists one item a line."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str | int | float):
        return str(value).strip()
    if isinstance(value, list | tuple):
        return "\n".join(text for text in map(text_of, value) if text)
    return json.dumps(value, ensure_ascii=False, default=str)


def field_values(pattern: re.Pattern[str], text: str) -> list[str]:
    """The value of every `"key": value` the pattern finds, JSON escapes resolved where possible."""
    values = []
    for match in pattern.finditer(text):
        quoted = match["quoted"]
        value = (_unescape(quoted) if quoted is not None else match["bare"]).strip()
        values.append("" if value in _NULLS else value)
    return values


def _unescape(body: str) -> str:
    """A JSON string body with its escapes resolved and its unescaped quotes kept, or as it is."""
    escaped = _BARE_QUOTE.sub(r'\\"', _LATEX_IN_JSON.sub(r"\\\\", body))
    try:
        return json.loads(f'"{escaped}"', strict=False)
    except ValueError:
        return body


# --- text clean-up -----------------------------------------------------------------------------------------
def plain(text: str) -> str:
    """Text without the LaTeX answers come in (\\boxed{\\text{B}} -> B, \\frac{3}{4} -> 3/4), and − as -."""
    previous = None
    while text != previous:
        previous = text
        text = _LATEX_FRACTION.sub(r"\1/\2", _LATEX_WRAPPER.sub(r"\1", text))
    text = text.replace("{,}", ",").replace("\\$", "$").replace("\\%", "%").replace("−", "-")
    return _LATEX_NOISE.sub("", text)


def clean(value: str) -> str:
    """An answer without LaTeX, markdown emphasis, quotes, $ or trailing punctuation around it."""
    value, previous = plain(value), None
    while value != previous:
        previous = value
        value = value.strip(WRAPPERS).rstrip(".,;:!?")
    return value


def shown(value: str) -> str:
    """An answer as quoted in a rejection's detail."""
    return excerpt(value, 60)
