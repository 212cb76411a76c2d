"""Answer parsing: a teacher reply becomes the student's answer, or a stable reason why it cannot.

Tolerant where the managed service is brittle. For NLI, NLU_QA and MATH the first of these places that holds
an answer decides; a wrong answer found there is rejected, never second-guessed:

1. a JSON object with an "answer" key (any casing; also "answer_choice", "final_answer", "choice", "label")
   anywhere in the reply: bare, fenced, amid prose, single-quoted, with trailing commas, Python literals or
   bare words; failing that, a quoted "answer": value read from JSON too broken to parse;
2. the last \\boxed{...};
3. the last "Answer: X", "The answer is X" or "Final answer: X".

Otherwise guesses are tried and kept only when they give a valid answer: a short first line ("B) bank",
"**Neutral**", "7 apples"), then the task's own scan (MATH: the last number; NLI: a leading label or the only
label named; NLU_QA: the only "(C)", "option C" or lone-letter line). A one-line reply that still fails is
rejected for the task's reason (INVALID_LABEL, INVALID_CHOICE, NOT_A_NUMBER); any other has no answer:
INVALID_JSON when JSON was asked for (chain of thought), NO_ANSWER when not.

Choices made here:
- MATH fractions ("3/4", "\\frac{3}{4}") are evaluated exactly: one with a terminating decimal becomes that
  decimal ("3/4" -> "0.75", "6/3" -> "2"); any other ("1/3") is NOT_A_NUMBER, as is "1e3".
- Code blocks with a language tag (```python) are skipped when reading answers from text: code is not run.
- <think>...</think> blocks of reasoning models are dropped before parsing and never kept as reasoning.
- An NLU_QA question without option lines accepts any letter: there is nothing to check it against.
"""

from __future__ import annotations

import ast
import json
import re
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction

from shared.manifest import PromptSettings
from shared.prompts import PromptStyle, style_for
from shared.reasons import Reason
from shared.tasks import NLI_LABELS, Task, choice_options


@dataclass(frozen=True, slots=True)
class Accepted:
    """A usable reply."""

    answer: str  # normalised answer text that becomes the student's assistant message
    reasoning: str | None  # the teacher's reasoning when it gave one (chain of thought), else None


@dataclass(frozen=True, slots=True)
class Rejected:
    """An unusable reply and why."""

    reason: Reason
    detail: str  # one readable sentence
    excerpt: str  # the start of the reply (see excerpt()), for the rejection report


@dataclass(frozen=True, slots=True)
class _Problem:
    """Why a reply is rejected, before the reply's excerpt is attached."""

    reason: Reason
    detail: str


@dataclass(frozen=True, slots=True)
class _Found:
    """An answer the reply states outright, not yet checked."""

    value: str
    reasoning: str | None = None


_SHORT_WORDS = 5  # a line this short may be the answer itself ("B) populated areas", "7 apples")
_WRAPPERS = " \t\r\n*_`\"'“”‘’$"  # markdown, quotes and $ around an answer
_THINK_BLOCK = re.compile(r"<think>.*?</think>", re.IGNORECASE | re.DOTALL)
_CODE_BLOCK = re.compile(
    r"```[ \t]*(?!(?:json|text|txt|plaintext|output|markdown|md)\b)[\w+#-]+[^\n]*\n.*?(?:```|$)",
    re.IGNORECASE | re.DOTALL)
_WANTED = {Task.NLI: "entailment, contradiction or neutral label", Task.NLU_QA: "option letter",
           Task.MATH: "number"}

# JSON and its near misses
_ANSWER_KEYS = ("finalanswer", "answer", "answerchoice", "choice", "label")  # keys without case, " ", _ or -
_REASONING_KEYS = ("reasoning", "reason", "rationale", "explanation")
_SUMMARY_KEYS = ("densersummary", "summary")
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


def _quoted_field(names: str) -> re.Pattern[str]:
    """`"name": value` as broken JSON still shows it; a quoted value ends where a next key or the object does,
    so quotes inside it need no escaping."""
    return re.compile(
        rf"""["'](?:{names})["']\s*:\s*"""
        rf"""(?:(?P<quote>["'])(?P<quoted>.*?)(?P=quote)(?=\s*(?:[}}\]]|$|,\s*(?:["'{{\[}}\]]|$)))"""
        rf"""|(?P<bare>[^\s"',}}\]][^,}}\]\n]*))""",
        re.IGNORECASE | re.DOTALL)


_ANSWER_FIELD = _quoted_field(r"final[ _]?answer|answer[ _]?choice|answer|choice|label")
_REASONING_FIELD = _quoted_field(r"reasoning|reason|rationale|explanation")
_SUMMARY_FIELD = _quoted_field(r"denser[ _]?summary")

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

# NLI
_LABELS = "|".join(NLI_LABELS)
_LEADING_LABEL = re.compile(rf"^[\W_]*({_LABELS})\b", re.IGNORECASE)
_LABEL_WORD = re.compile(  # a label, with the negation right before it if any ("isn't a contradiction")
    rf"(?P<negation>(?:\b(?:not|no|never)|n't)\s+(?:(?:a|an|the)\s+)?)?\b(?P<label>{_LABELS})\b",
    re.IGNORECASE)

# NLU_QA
_LETTER = re.compile(  # "B", "b", "(B)", "[B]", "B) bank", "B. bank", "B because", "Option B"; not "I think"
    r"^(?:(?i:option|choice|letter|answer)\s*:?\s*)?[(\[]?"
    r"(?:([A-HJ-Z])(?![\w'’])|([A-Za-z])(?=$|[).:,\]]))")
_PAREN_LETTER = re.compile(r"\(([A-Z])\)")
_OPTION_WORD = re.compile(r"\b(?i:option|choice)\s+\(?([A-Z])\b")
_CAPITAL_WORD = re.compile(r"(?<![\w'’])([A-HJ-Z])(?![\w'’])")
_LONE_LETTER_LINE = re.compile(r"^[ \t*_>#-]*\(?([A-Z])\)?[.)]?[ \t*_]*$", re.MULTILINE)

# MATH
_NUMBER_TOKEN = r"([-+]?(?:\d+(?:\.\d+)?|\.\d+)(?:\s*/\s*\d+)?)(?![\w/]|[.,:-]\d)"  # not "1e3", "1,5", "7:30"
_NUMBER = re.compile(r"(?<![\w./-])(?<!\d[,:])" + _NUMBER_TOKEN)
_LEADING_NUMBER = re.compile(r"\s*" + _NUMBER_TOKEN)
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")
_CURRENCY = re.compile(r"[$€£]")


def excerpt(text: str | None, limit: int = 200) -> str:
    """`text` on one line with white space collapsed, cut to `limit` characters ending in "…" when longer."""
    if limit < 1:
        raise ValueError(f"limit must be at least 1, not {limit}")
    flat = " ".join((text or "").split())
    return flat if len(flat) <= limit else flat[: limit - 1].rstrip() + "…"


def parse_reply(task: Task, content: str | None, finish_reason: str | None, *, question: str,
                prompt: PromptSettings) -> Accepted | Rejected:
    """Check and normalise one teacher reply to a row of `task`.

    `question` is the row's last user message (NLU_QA reads its options there); `prompt` tells which reply
    format the teacher was asked for.
    """
    if finish_reason not in (None, "stop"):
        detail = f"the reply was cut off (finish_reason {finish_reason!r})"
        return Rejected(Reason.TRUNCATED, detail, excerpt(content))
    text = _THINK_BLOCK.sub("", content or "").strip()
    if not text:
        detail = "the reply holds only a <think> block" if (content or "").strip() else "the reply is empty"
        return Rejected(Reason.EMPTY, detail, excerpt(content))
    outcome = _parse(task, text, question, prompt)
    if isinstance(outcome, _Problem):
        return Rejected(outcome.reason, outcome.detail, excerpt(content))
    return outcome


def _parse(task: Task, text: str, question: str, prompt: PromptSettings) -> Accepted | _Problem:
    style = style_for(prompt)
    if task is Task.CONVERSATION:
        return Accepted(text, None)
    if task is Task.SUMMARIZATION:
        summary = _densest_summary(text) if style is PromptStyle.CHAIN_OF_DENSITY else _plain_summary(text)
        return _checked_summary(summary, prompt.max_len_summary)
    return _single_answer(task, text, _options(question) if task is Task.NLU_QA else {}, style)


# --- NLI, NLU_QA, MATH -------------------------------------------------------------------------------------
def _single_answer(task: Task, text: str, options: dict[str, str], style: PromptStyle) -> Accepted | _Problem:
    """The answer of a one-answer task: stated outright, else guessed, else the reason there is none."""
    prose = _CODE_BLOCK.sub("\n", text).strip()
    found = _json_answer(text) or _salvaged_answer(text) or _boxed_answer(prose) or _answer_line(prose)
    if found is not None:
        return _accept(_normalise(task, found.value, options), found.reasoning)
    for guess in _guesses(task, prose):
        checked = _normalise(task, guess, options)
        if isinstance(checked, str):
            return Accepted(checked, None)
    if _is_bare(prose):
        return _accept(_normalise(task, prose, options), None)
    if style is PromptStyle.CHAIN_OF_THOUGHT:
        return _Problem(Reason.INVALID_JSON,
                        f"no JSON answer could be parsed and no {_WANTED[task]} recovered from the text")
    return _Problem(Reason.NO_ANSWER, f"no {_WANTED[task]} found in the reply")


def _is_bare(prose: str) -> bool:
    """One short line that is not JSON: the answer itself, however wrong ("maybe", "seven")."""
    return bool(prose) and "\n" not in prose and len(prose.split()) <= _SHORT_WORDS and prose[0] not in "{["


def _accept(checked: str | _Problem, reasoning: str | None) -> Accepted | _Problem:
    return checked if isinstance(checked, _Problem) else Accepted(checked, reasoning)


def _normalise(task: Task, value: str, options: dict[str, str]) -> str | _Problem:
    """The task's canonical form of an answer, or why it is not a valid one."""
    cleaned = _clean(value)
    if task is Task.NLI:
        return _label(cleaned)
    if task is Task.NLU_QA:
        return _choice(cleaned, options)
    return _number(cleaned)


def _guesses(task: Task, prose: str) -> Iterator[str]:
    """Possible answers of a reply that states none, best first; each counts only if it is valid."""
    line = prose.split("\n", 1)[0].strip(_WRAPPERS)
    if not line.endswith(":") and len(line.split()) <= _SHORT_WORDS and (
            task is not Task.MATH or _LEADING_NUMBER.match(_THOUSANDS.sub("", _clean(line)))):
        yield line  # "Step 1" is no answer to a MATH question, "7 apples" is
    if task is Task.NLI:
        yield from _label_mentions(prose)
    elif task is Task.NLU_QA:
        yield from _letter_mentions(prose)
    else:
        yield from _NUMBER.findall(_THOUSANDS.sub("", _plain(prose)))[-1:]


def _label_mentions(prose: str) -> Iterator[str]:
    """A label the reply opens with, then the only label it names without negating it."""
    if match := _LEADING_LABEL.match(prose):
        yield match.group(1)
    labels = _affirmed_labels(prose)
    if len(labels) == 1:
        yield labels.pop()


def _letter_mentions(prose: str) -> Iterator[str]:
    """The only option letter the reply names as "(C)", "option C" or a line of its own."""
    letters = {match.group(1) for pattern in (_PAREN_LETTER, _OPTION_WORD, _LONE_LETTER_LINE)
               for match in pattern.finditer(prose)}
    if len(letters) == 1:
        yield letters.pop()


def _label(value: str) -> str | _Problem:
    """An NLI label: the one the answer opens with, else the only one it names and does not negate."""
    if match := _LEADING_LABEL.match(value):
        return match.group(1).lower()
    labels = _affirmed_labels(value)
    if len(labels) == 1:
        return labels.pop()
    return _Problem(Reason.INVALID_LABEL, f"label '{_shown(value)}' is not one of {', '.join(NLI_LABELS)}")


def _affirmed_labels(text: str) -> set[str]:
    """The labels the text names, leaving out negated ones ("not entailment")."""
    return {match["label"].lower() for match in _LABEL_WORD.finditer(text) if not match["negation"]}


def _options(question: str) -> dict[str, str]:
    """The question's options, letter -> cleaned lower-case text, as shared.tasks reads them."""
    return {letter: _clean(text).casefold() for letter, text in choice_options(question).items()}


def _choice(value: str, options: dict[str, str]) -> str | _Problem:
    """An option letter the question offers, upper case."""
    letter = _letter_of(value, options)
    if letter is None:
        return _Problem(Reason.INVALID_CHOICE, f"answer '{_shown(value)}' does not name one option letter")
    if options and letter not in options:
        return _Problem(Reason.INVALID_CHOICE,
                        f"choice '{letter}' is not one of the question's options {', '.join(options)}")
    return letter


def _letter_of(value: str, options: dict[str, str]) -> str | None:
    """The letter an answer opens with ("b", "(B)", "B) bank", "Option B"), else the option whose exact text
    it is, else the only letter it names ("I'd pick B")."""
    if match := _LETTER.match(value):
        return (match.group(1) or match.group(2)).upper()
    by_text = {letter for letter, text in options.items() if text and text == value.casefold()}
    named = {match.group(1) for pattern in (_PAREN_LETTER, _OPTION_WORD, _CAPITAL_WORD)
             for match in pattern.finditer(value)}
    return next((letters.pop() for letters in (by_text, named) if len(letters) == 1), None)


def _number(value: str) -> str | _Problem:
    """A plain decimal: "1,000" -> "1000", "$7.50" -> "7.5", "x = 7" -> "7", "3 apples" -> "3"."""
    text = _CURRENCY.sub("", _THOUSANDS.sub("", value)).rsplit("=", 1)[-1]
    leading = _LEADING_NUMBER.match(text)
    tokens = [leading.group(1)] if leading else _NUMBER.findall(text)
    if len(tokens) != 1:
        return _Problem(Reason.NOT_A_NUMBER, f"answer '{_shown(value)}' is not a plain number")
    number = _exact_decimal(tokens[0])
    if number is None:
        return _Problem(Reason.NOT_A_NUMBER, f"answer '{_shown(value)}' has no exact decimal value")
    return number


def _exact_decimal(token: str) -> str | None:
    """A number or fraction as a decimal ("+7.50" -> "7.5", "3/4" -> "0.75"), None if it has none ("1/3")."""
    numerator, _, denominator = token.replace(" ", "").partition("/")
    try:
        value = Fraction(numerator) / Fraction(denominator or 1)
        places, rest = 0, value.denominator
        for prime in (2, 5):  # a fraction ends as a decimal when its denominator has no other factor
            count = 0
            while rest % prime == 0:
                rest, count = rest // prime, count + 1
            places = max(places, count)
        if rest != 1:
            return None
        digits = str(abs(value.numerator) * 10**places // value.denominator).rjust(places + 1, "0")
    except (ValueError, ZeroDivisionError):  # ValueError: more digits than Python converts
        return None
    whole, fraction = digits[: len(digits) - places], digits[len(digits) - places:]
    return ("-" if value < 0 else "") + whole + (f".{fraction}" if fraction else "")


# --- answers stated outright -------------------------------------------------------------------------------
def _json_answer(text: str) -> _Found | None:
    """The answer (and reasoning) of the last JSON object in the reply that has an answer."""
    for value in reversed(_json_values(text)):
        for obj in _objects(value):
            answer = _text_of(_field(obj, _ANSWER_KEYS))
            if answer:
                return _Found(answer, _text_of(_field(obj, _REASONING_KEYS)) or None)
    return None


def _salvaged_answer(text: str) -> _Found | None:
    """The last "answer": value of JSON too broken to parse, with the last "reasoning" if one can be read."""
    answers = [answer for answer in _field_values(_ANSWER_FIELD, text) if answer]
    if not answers:
        return None
    reasonings = [reasoning for reasoning in _field_values(_REASONING_FIELD, text) if reasoning]
    return _Found(answers[-1], reasonings[-1] if reasonings else None)


def _boxed_answer(prose: str) -> _Found | None:
    """The content of the last \\boxed{...} that closes, nested braces allowed."""
    closing = _closing_braces(prose)
    for match in reversed(list(_BOXED.finditer(prose))):
        end = closing.get(match.end() - 1)
        if end is not None and prose[match.end():end].strip():
            return _Found(prose[match.end():end])
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


def _answer_line(prose: str) -> _Found | None:
    """The last "Answer: X" / "the answer is X"; the text before it is reasoning when it opens its line."""
    matches = list(_ANSWER_LINE.finditer(prose))
    if not matches:
        return None
    match = matches[-1]
    line_start = prose.rfind("\n", 0, match.start()) + 1
    opens_line = not prose[line_start:match.start()].strip(_LINE_LEAD)
    return _Found(match.group("value"), (prose[:line_start].strip() or None) if opens_line else None)


# --- summaries ---------------------------------------------------------------------------------------------
_SUMMARY_INTRO = re.compile(  # "Summary:", "**Summary:**", "Here is a concise summary of the article:"
    r"^[*#_\s]*(?:here(?:'s|’s|\s+is)\b[^\n:]*\bsummary\b[^\n:]*|(?:the\s+)?summary\b[^\n:]{0,40}?)"
    r"[*_]*:[*_]*\s*",
    re.IGNORECASE)
_CLOSING_QUOTE = {'"': '"', "“": "”", "'": "'", "‘": "’"}


def _plain_summary(text: str) -> str:
    """The reply without a "Summary:" lead-in or quotes around all of it."""
    summary = _SUMMARY_INTRO.sub("", text, count=1).strip()
    if (len(summary) > 1 and _CLOSING_QUOTE.get(summary[0]) == summary[-1]
            and summary[0] not in summary[1:-1] and summary[-1] not in summary[1:-1]):
        summary = summary[1:-1].strip()
    return summary


def _densest_summary(text: str) -> str | _Problem:
    """The last non-empty denser_summary of a chain-of-density reply (a list of steps, maybe wrapped)."""
    for value in reversed(_json_values(text)):
        summaries = [summary for obj in _objects(value) if (summary := _text_of(_field(obj, _SUMMARY_KEYS)))]
        if summaries:
            return summaries[-1]
    salvaged = [summary for summary in _field_values(_SUMMARY_FIELD, text) if summary]
    if salvaged:
        return salvaged[-1]
    return _Problem(Reason.INVALID_JSON, "no JSON list of steps with a denser_summary could be parsed")


def _checked_summary(summary: str | _Problem, max_words: int) -> Accepted | _Problem:
    if isinstance(summary, _Problem):
        return summary
    words = len(summary.split())
    if not words:
        return _Problem(Reason.NO_ANSWER, "the reply holds no summary text")
    if words > max_words:
        return _Problem(Reason.TOO_LONG, f"the summary has {words} words, more than the limit of {max_words}")
    return Accepted(summary, None)


# --- JSON, leniently ---------------------------------------------------------------------------------------
def _json_values(text: str) -> list[object]:
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


def _objects(value: object) -> Iterator[dict[object, object]]:
    """The JSON objects inside a parsed value, outer before inner."""
    queue = deque([value])
    while queue:
        item = queue.popleft()
        if isinstance(item, dict):
            yield item
            queue.extend(item.values())
        elif isinstance(item, list | tuple):
            queue.extend(item)


def _field(obj: dict[object, object], names: tuple[str, ...]) -> object:
    """The value of the first of `names` the object has; keys compare without case, spaces, "_" or "-"."""
    keyed = {_KEY_NOISE.sub("", str(key).lower()): value for key, value in obj.items()}
    return next((keyed[name] for name in names if name in keyed), None)


def _text_of(value: object) -> str:
    """A JSON value as text: numbers as Python writes them (7.0 -> "7.0"), lists one item a line."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str | int | float):
        return str(value).strip()
    if isinstance(value, list | tuple):
        return "\n".join(text for text in map(_text_of, value) if text)
    return json.dumps(value, ensure_ascii=False, default=str)


def _field_values(pattern: re.Pattern[str], text: str) -> list[str]:
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
def _plain(text: str) -> str:
    """Text without the LaTeX answers come in (\\boxed{\\text{B}} -> B, \\frac{3}{4} -> 3/4), and − as -."""
    previous = None
    while text != previous:
        previous = text
        text = _LATEX_FRACTION.sub(r"\1/\2", _LATEX_WRAPPER.sub(r"\1", text))
    text = text.replace("{,}", ",").replace("\\$", "$").replace("\\%", "%").replace("−", "-")
    return _LATEX_NOISE.sub("", text)


def _clean(value: str) -> str:
    """An answer without LaTeX, markdown emphasis, quotes, $ or trailing punctuation around it."""
    value, previous = _plain(value), None
    while value != previous:
        previous = value
        value = value.strip(_WRAPPERS).rstrip(".,;:!?")
    return value


def _shown(value: str) -> str:
    """An answer as quoted in a rejection's detail."""
    return excerpt(value, 60)
