"""Which of the teacher's answers to a question is kept: the majority of several samples (self-consistency), and the
check against the row's reference answer (pure Python).

Both are quality gates: the teacher answered usably, and the gate keeps a doubtful answer out of the dataset, with a
reason of its own (`no_majority`, `disagrees_with_reference`) that does not count against min_success_ratio.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from shared.evaluation import score
from shared.manifest.model import Manifest
from shared.parsing import parse_reply
from shared.reasons import Reason
from shared.tasks.base import Accepted, Rejected
from shared.tasks.reading import excerpt


@dataclass(frozen=True, slots=True)
class Verdict:
    """The answer kept for a question (or why none is), and the share of the samples that gave it."""

    outcome: Accepted | Rejected
    agreement: float | None = None  # None for a single sample


def majority(manifest: Manifest, replies: Sequence[tuple[str | None, str | None]], question: str) -> Verdict:
    """The answer most samples give, with the longest reasoning that reaches it (a sample that shows its working
    teaches a student more than one that sums it up; the first of equals); rejected `no_majority` when too few agree
    (manifest.min_agreement, default: more than half of the samples). One sample is judged as it is; when no sample
    is usable, the first one's rejection stands."""
    verdicts = [parse_reply(manifest.task, content, finish, question=question, prompt=manifest.prompt)
                for content, finish in replies]
    if len(verdicts) == 1:
        return Verdict(verdicts[0])
    usable = [v for v in verdicts if isinstance(v, Accepted)]
    if not usable:
        return Verdict(verdicts[0], 0.0)
    answer, votes = Counter(v.answer for v in usable).most_common(1)[0]
    agreement = votes / len(verdicts)
    needed = manifest.min_agreement
    if (agreement < needed) if needed is not None else (votes * 2 <= len(verdicts)):
        tally = ", ".join(f"{a} {n}" for a, n in Counter(v.answer for v in usable).most_common())
        rule = f"min_agreement {needed:.0%}" if needed is not None else "more than half"
        return Verdict(Rejected(Reason.NO_MAJORITY, f"{votes} of {len(verdicts)} samples agree ({tally}; "
                                f"unusable {len(verdicts) - len(usable)}), and the job needs {rule}",
                                excerpt(replies[0][0])), round(agreement, 4))
    reaching = (v for v in usable if v.answer == answer)
    return Verdict(max(reaching, key=lambda v: len(v.reasoning or "")), round(agreement, 4))


def disagreement(manifest: Manifest, answer: Accepted, reference: str | None, question: str) -> Rejected | None:
    """With drop_disagreeing, the rejection of an answer that is not the row's reference answer (both read by the
    task's parser); None when it agrees, or the row has no reference, or the check is off."""
    if not manifest.drop_disagreeing or reference is None or agrees(manifest, answer, reference, question):
        return None
    return Rejected(Reason.DISAGREES, f"the teacher answered {answer.answer!r}; the reference answer is "
                    f"{excerpt(reference, 60)!r}", excerpt(answer.reasoning or answer.answer))


def agrees(manifest: Manifest, answer: Accepted, reference: str, question: str) -> bool:
    """Whether the teacher's answer is the reference answer."""
    return score(manifest.task, answer.answer, reference, question=question, prompt=manifest.prompt) == 1.0
