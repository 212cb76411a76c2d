"""CONVERSATION: a system prompt, then complete user/assistant pairs; the teacher answers every user turn, and any
non-empty reply is the answer (scored by ROUGE-L)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from shared.tasks.base import Accepted, TaskRules

if TYPE_CHECKING:
    from shared.manifest.model import PromptSettings

REPLY_TOKENS = 256


class Conversation(TaskRules):
    name = "CONVERSATION"
    single_turn = False
    metric = "rouge_l"

    def parse(self, text: str, question: str, prompt: PromptSettings) -> Accepted:
        return Accepted(text, None)

    def answer_tokens(self, prompt: PromptSettings, reply_tokens: int) -> int:
        return REPLY_TOKENS

    def test_answer(self, user: str) -> str:
        return f'Thanks for your message about "{" ".join(user.split()[:8])}". Here is a short reply.'

    def wrong_answer(self, answer: str, user: str) -> str:
        return "Let us talk about something else."


RULES = Conversation()
