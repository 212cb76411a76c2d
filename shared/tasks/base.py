"""What every task type shares: the reply formats a teacher is asked for, the verdict on a reply, and the base classes
a task module fills in with its own rules (shared.tasks registers one instance per task type).

A task module owns everything about its type: how many turns a row has and how many rows a file needs, which prompt
styles it allows and their wording, the validation rules for its questions and reference answers, how an answer is
read from a reply, how it is scored, how long a student's answer may be, and the test teacher's answers.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, ClassVar, Literal

from shared.reasons import Reason
from shared.tasks.reading import CODE_BLOCK, SHORT_WORDS, WRAPPERS, clean, is_bare, stated_answer, surrounding_reasoning

if TYPE_CHECKING:
    from shared.manifest.model import PromptSettings

Metric = Literal["accuracy", "rouge_l"]
COT_MARKER = "Think it through in a few short steps"  # in our chain-of-thought system prompt (the test teacher looks)
SHORT_ANSWER_TOKENS = 32  # a label, letter or number; room for a short lead-in such as "The answer is"


class PromptStyle(StrEnum):
    PLAIN = "plain"
    CHAIN_OF_THOUGHT = "chain_of_thought"
    CHAIN_OF_DENSITY = "chain_of_density"


def style_for(settings: PromptSettings) -> PromptStyle:
    if settings.chain_of_density:
        return PromptStyle.CHAIN_OF_DENSITY
    if settings.chain_of_thought:
        return PromptStyle.CHAIN_OF_THOUGHT
    return PromptStyle.PLAIN


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
class Problem:
    """Why a reply is rejected, before the reply's excerpt is attached."""

    reason: Reason
    detail: str


def shown_value(value: object, width: int = 40) -> str:
    """A value for a validation detail: its repr, cut short."""
    text = repr(value)
    return text if len(text) <= width else text[: width - 1] + "…"


class TaskRules:
    """The rules of one task type. Subclasses set the class attributes and override what their type does."""

    name: ClassVar[str]  # the task's value, e.g. "NLI"
    single_turn: ClassVar[bool] = True  # one system and one user message; else complete user/assistant pairs
    min_rows: ClassVar[int] = 65  # the managed service's minimum rows per file
    chain_of_thought: ClassVar[bool] = False  # allows prompt.chain_of_thought
    chain_of_density: ClassVar[bool] = False  # allows prompt.chain_of_density
    summary_length: ClassVar[bool] = False  # takes prompt.max_len_summary
    metric: ClassVar[Metric] = "accuracy"  # how answers are scored: exact match, or ROUGE-L

    def row_problems(self, question: str, reference: str | None) -> list[tuple[str, str]]:
        """(rule, detail) for what is wrong with a single-turn row's question and reference answer."""
        problems = self.question_problems(question)
        if not problems and reference and reference.strip():
            problem = self.reference_problem(reference.strip(), question)
            problems += [("reference", problem)] if problem else []
        return problems

    def question_problems(self, question: str) -> list[tuple[str, str]]:
        """(rule, detail) for what is wrong with a question; none by default."""
        return []

    def reference_problem(self, answer: str, question: str) -> str | None:
        """Why a (stripped, non-empty) reference answer cannot be right for its question, or None."""
        return None

    def teacher_system(self, style: PromptStyle, prompt: PromptSettings) -> str:
        """Our system prompt for the teacher in a style other than plain (the manifest allows only the task's)."""
        raise ValueError(f"{self.name} has no {style.value} prompt")

    def parse(self, text: str, question: str, prompt: PromptSettings) -> Accepted | Problem:
        """The answer in a reply's text (non-empty, <think> blocks removed), or why there is none."""
        raise NotImplementedError

    def answer_tokens(self, prompt: PromptSettings, reply_tokens: int) -> int:
        """Room for the answer a student was trained to give (evaluation's max_new_tokens); `reply_tokens` is the
        most a teacher reply may hold (`inference.max_tokens`), reasoning a student learnt included."""
        return reply_tokens + SHORT_ANSWER_TOKENS if prompt.keep_reasoning else SHORT_ANSWER_TOKENS

    def test_answer(self, user: str) -> str:
        """The test teacher's answer to a question it has no reference answer for (deterministic)."""
        raise NotImplementedError

    def wrong_answer(self, answer: str, user: str) -> str:
        """A well-formed reply this task's parsing must reject (the test teacher's WRONG_LABEL fault)."""
        raise NotImplementedError


class AnswerRules(TaskRules):
    """A task whose answer is one short value (a label, a letter, a number), asked for plainly or with reasoning.

    For these, the first of these places that holds an answer decides; a wrong answer found there is rejected,
    never second-guessed: a JSON object with an answer key, the last \\boxed{...}, the last "Answer: X" line
    (shared.tasks.reading). Otherwise guesses are tried and kept only when they give a valid answer: a short first
    line ("B) bank", "**Neutral**", "7 apples"), then the task's own `mentions`. A one-line reply that still fails
    is rejected for the task's reason; any other has no answer: INVALID_JSON when JSON was asked for (chain of
    thought), NO_ANSWER when not.
    """

    chain_of_thought = True
    problems: ClassVar[str]  # what the teacher solves, for the chain-of-thought prompt: "math word problems"
    answer_spec: ClassVar[str]  # what its answer must be: "a plain number with no units, ..."
    wanted: ClassVar[str]  # what a reply without one lacks: "number"

    def teacher_system(self, style: PromptStyle, prompt: PromptSettings) -> str:
        if style is not PromptStyle.CHAIN_OF_THOUGHT:
            return super().teacher_system(style, prompt)
        return (
            f"You solve {self.problems} carefully. {COT_MARKER} "
            "(80 words at most), then give your final answer. "
            "Reply with one JSON object and nothing else, in this form:\n"
            '{"reasoning": "<your short reasoning>", "answer": <final answer>}\n'
            f"The answer must be {self.answer_spec}."
        )

    def parse(self, text: str, question: str, prompt: PromptSettings) -> Accepted | Problem:
        """The answer stated outright, else guessed, else the reason there is none."""
        prose = CODE_BLOCK.sub("\n", text).strip()
        found = stated_answer(text, prose)
        if found is not None:
            checked = self.answer(clean(found.value), question)
            return checked if isinstance(checked, Problem) else Accepted(checked, found.reasoning)
        for guess, reasoning in self._guesses(prose):
            checked = self.answer(clean(guess), question)
            if isinstance(checked, str):
                return Accepted(checked, reasoning)
        if is_bare(prose):
            checked = self.answer(clean(prose), question)
            return checked if isinstance(checked, Problem) else Accepted(checked, None)
        if style_for(prompt) is PromptStyle.CHAIN_OF_THOUGHT:
            return Problem(Reason.INVALID_JSON,
                           f"no JSON answer could be parsed and no {self.wanted} recovered from the text")
        return Problem(Reason.NO_ANSWER, f"no {self.wanted} found in the reply")

    def _guesses(self, prose: str) -> Iterator[tuple[str, str | None]]:
        """Possible answers of a reply that states none, best first, each with the reasoning that leads to it: none
        for a first line that is the answer, the whole reply for an answer found in it. Each counts only if valid."""
        line = prose.split("\n", 1)[0].strip(WRAPPERS)
        if not line.endswith(":") and len(line.split()) <= SHORT_WORDS and self.first_line_answers(line):
            yield line, None
        reasoning = surrounding_reasoning(prose)
        yield from ((mention, reasoning) for mention in self.mentions(prose))

    def first_line_answers(self, line: str) -> bool:
        """Whether a short first line may be the answer itself."""
        return True

    def answer(self, value: str, question: str) -> str | Problem:
        """The canonical form of a cleaned answer, or why it is not a valid one."""
        raise NotImplementedError

    def mentions(self, prose: str) -> Iterator[str]:
        """The task's own scan of a reply that states no answer, best guess first."""
        raise NotImplementedError
