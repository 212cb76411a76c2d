"""A dataset row: its input messages, its optional reference answer, and its stable id."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass

Message = dict[str, str]


@dataclass(frozen=True, slots=True)
class Row:
    """One input line, as the teacher will see it.

    `messages` never contains the reference answer: a single-turn row's trailing assistant message is moved to
    `reference` and used only for scoring.
    """

    id: str
    source: str
    line: int
    messages: tuple[Message, ...]
    reference: str | None = None

    @property
    def system(self) -> str | None:
        first = self.messages[0] if self.messages else None
        return first["content"] if first and first["role"] == "system" else None

    @property
    def user(self) -> str:
        """The last user message (the question of a single-turn row)."""
        return next(m["content"] for m in reversed(self.messages) if m["role"] == "user")


def canonical_input(messages: tuple[Message, ...] | list[Message]) -> str:
    """The byte-stable JSON of a row's input: keys sorted, no insignificant spaces, text kept as is."""
    return json.dumps(
        [{"role": m["role"], "content": m["content"]} for m in messages],
        ensure_ascii=False,
        sort_keys=True,
        separators=(",", ":"),
    )


class RowIds:
    """Gives each row `<sha256 of its canonical input>-<occurrence>` so repeated lines stay separate rows.

    One instance per file, fed rows in file order: the n-th copy of an input gets occurrence n (from 0).
    """

    def __init__(self) -> None:
        self._seen: Counter[bytes] = Counter()

    def assign(self, messages: tuple[Message, ...] | list[Message]) -> str:
        digest = hashlib.sha256(canonical_input(messages).encode("utf-8")).digest()
        occurrence = self._seen[digest[:16]]
        self._seen[digest[:16]] += 1
        return f"{digest.hex()}-{occurrence}"

    def repeats(self, row_id: str) -> bool:
        """True when this id is not the first occurrence of its input."""
        return not row_id.endswith("-0")
