"""ROUGE-L F1, the score of a summary or a chat reply against its target (pure Python)."""

from __future__ import annotations

import re

_WORD = re.compile(r"\w+")


def rouge_l(candidate: str, reference: str) -> float:
    """ROUGE-L F1 over lower-cased word tokens (longest common subsequence); 0.0 when either is empty."""
    cand, ref = _WORD.findall(candidate.lower()), _WORD.findall(reference.lower())
    common = _lcs_length(cand, ref)
    if not common:
        return 0.0
    precision, recall = common / len(cand), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def _lcs_length(a: list[str], b: list[str]) -> int:
    """Length of the longest common subsequence, in O(len(a) * len(b)) time and O(len(b)) memory."""
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0]
        for j, y in enumerate(b):
            current.append(previous[j] + 1 if x == y else max(previous[j + 1], current[j]))
        previous = current
    return previous[-1]
