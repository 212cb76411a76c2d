"""SUMMARIZATION: an article to summarise in at most `prompt.max_len_summary` words, plainly or by chain of
density (four ever denser summaries; the last one is kept). Scored by ROUGE-L."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from shared.reasons import Reason
from shared.tasks.base import Accepted, Problem, PromptStyle, TaskRules, style_for
from shared.tasks.reading import field, field_values, json_values, objects, quoted_field, text_of

if TYPE_CHECKING:
    from shared.manifest.model import PromptSettings

DEFAULT_MAX_LEN_SUMMARY = 80
COD_MARKER = "increasingly entity-dense summaries"  # in our chain-of-density system prompt (the test teacher looks)
TEST_SUMMARY_WORDS = 40  # the test teacher's summary without a reference: the article's first words
TOO_LONG_WORDS = 2001  # more words than any allowed max_len_summary
_SUMMARY_KEYS = ("densersummary", "summary")
_SUMMARY_FIELD = quoted_field(r"denser[ _]?summary")
_SUMMARY_INTRO = re.compile(  # "Summary:", "**Summary:**", "Here is a concise summary of the article:"
    r"^[*#_\s]*(?:here(?:'s|’s|\s+is)\b[^\n:]*\bsummary\b[^\n:]*|(?:the\s+)?summary\b[^\n:]{0,40}?)"
    r"[*_]*:[*_]*\s*",
    re.IGNORECASE)
_CLOSING_QUOTE = {'"': '"', "“": "”", "'": "'", "‘": "’"}


class Summarization(TaskRules):
    name = "SUMMARIZATION"
    chain_of_density = True
    summary_length = True
    metric = "rouge_l"

    def teacher_system(self, style: PromptStyle, prompt: PromptSettings) -> str:
        if style is not PromptStyle.CHAIN_OF_DENSITY:
            return super().teacher_system(style, prompt)
        return (
            f"You write {COD_MARKER} of an article. Write four summaries of the same article, one after the other. "
            "Each new summary keeps every entity of the one before, adds one to three informative entities that "
            "were missing, and stays as short by fusing and compressing the wording. "
            f"Every summary has at most {prompt.max_len_summary} words. "
            "Reply with one JSON list of four objects and nothing else, in this form:\n"
            '[{"missing_entities": "<entities added in this step>", "denser_summary": "<the summary>"}, ...]'
        )

    def parse(self, text: str, question: str, prompt: PromptSettings) -> Accepted | Problem:
        density = style_for(prompt) is PromptStyle.CHAIN_OF_DENSITY
        summary = _densest_summary(text) if density else _plain_summary(text)
        if isinstance(summary, Problem):
            return summary
        words, limit = len(summary.split()), prompt.max_len_summary
        if not words:
            return Problem(Reason.NO_ANSWER, "the reply holds no summary text")
        if words > limit:
            return Problem(Reason.TOO_LONG, f"the summary has {words} words, more than the limit of {limit}")
        return Accepted(summary, None)

    def answer_tokens(self, prompt: PromptSettings, reply_tokens: int) -> int:
        return 2 * prompt.max_len_summary + 16  # ~1.3 tokens a word, with margin

    def test_answer(self, user: str) -> str:
        return " ".join(user.split()[:TEST_SUMMARY_WORDS])

    def wrong_answer(self, answer: str, user: str) -> str:
        """A summary longer than any limit."""
        words = user.split() or ["word"]
        return " ".join(words[i % len(words)] for i in range(TOO_LONG_WORDS))


def _plain_summary(text: str) -> str:
    """The reply without a "Summary:" lead-in or quotes around all of it."""
    summary = _SUMMARY_INTRO.sub("", text, count=1).strip()
    if (len(summary) > 1 and _CLOSING_QUOTE.get(summary[0]) == summary[-1]
            and summary[0] not in summary[1:-1] and summary[-1] not in summary[1:-1]):
        summary = summary[1:-1].strip()
    return summary


def _densest_summary(text: str) -> str | Problem:
    """The last non-empty denser_summary of a chain-of-density reply (a list of steps, maybe wrapped)."""
    for value in reversed(json_values(text)):
        summaries = [summary for obj in objects(value) if (summary := text_of(field(obj, _SUMMARY_KEYS)))]
        if summaries:
            return summaries[-1]
    salvaged = [summary for summary in field_values(_SUMMARY_FIELD, text) if summary]
    if salvaged:
        return salvaged[-1]
    return Problem(Reason.INVALID_JSON, "no JSON list of steps with a denser_summary could be parsed")


RULES = Summarization()
