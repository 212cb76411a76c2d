"""ROUGE-L F1, the score of a summary or a chat reply against its target (pure Python, any script).

Text is NFKC-normalised and case-folded, so composed and decomposed accents, full-width and ASCII
letters, and "STRASSE" and "straße" compare equal, while "résumé" and "resume" do not. A word is a run
of letters, combining marks, digits and connector punctuation ("_"). Scripts written without spaces
between words (Han, Hiragana, Katakana, Thai, Lao, Khmer, Myanmar) count one character per token, with
its combining marks; Hangul, like Latin, Greek or Cyrillic, counts whole words.
"""

from __future__ import annotations

import re
from unicodedata import category, normalize

_UNSPACED = re.compile(
    "[\u0e00-\u0eff"  # Thai, Lao
    "\u1000-\u109f"  # Myanmar
    "\u1780-\u17ff"  # Khmer
    "\u3005\u3007\u3021-\u3029\u3038-\u303b"  # Han iteration marks and numerals
    "\u3040-\u30ff\u31f0-\u31ff"  # Hiragana, Katakana
    "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"  # Han ideographs
    "\U0001b000-\U0001b16f"  # Kana supplement and extensions
    "\U00020000-\U0003ffff]"  # Han ideographs beyond the BMP
)


def rouge_l(candidate: str, reference: str) -> float:
    """ROUGE-L F1 (longest common subsequence) over `rouge_tokens`; 0.0 when either text has none."""
    cand, ref = rouge_tokens(candidate), rouge_tokens(reference)
    common = _lcs_length(cand, ref)
    if not common:
        return 0.0
    precision, recall = common / len(cand), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def rouge_tokens(text: str) -> list[str]:
    """NFKC case-folded words, and single characters of the scripts that do not space their words."""
    found: list[str] = []
    last = ""  # what the previous character went to: "word", "char", or "" after a separator
    for char in normalize("NFKC", normalize("NFKC", text).casefold()):  # folding can undo NFKC
        kind = category(char)
        if kind[0] == "M":  # a combining mark stays on the character before it
            if last:
                found[-1] += char
        elif kind[0] not in "LN" and kind != "Pc":  # space, punctuation or symbol
            last = ""
        elif _UNSPACED.match(char):
            found.append(char)
            last = "char"
        elif last == "word":
            found[-1] += char
        else:
            found.append(char)
            last = "word"
    return found


def _lcs_length(a: list[str], b: list[str]) -> int:
    """Length of the longest common subsequence, in O(len(a) * len(b)) time and O(len(b)) memory."""
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0]
        for j, y in enumerate(b):
            current.append(previous[j] + 1 if x == y else max(previous[j + 1], current[j]))
        previous = current
    return previous[-1]
