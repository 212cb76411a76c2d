"""Stable reason codes for rows that do not make it into the synthetic dataset."""

from enum import StrEnum


class Reason(StrEnum):
    # the reply came back but is unusable
    EMPTY = "empty"  # no content, or only white space
    TRUNCATED = "truncated"  # finish_reason was not "stop" (token limit, content filter...)
    INVALID_JSON = "invalid_json"  # a JSON reply was asked for and no answer could be recovered from it
    NO_ANSWER = "no_answer"  # no answer of the task's kind could be found in the reply
    INVALID_LABEL = "invalid_label"  # NLI: not one of entailment / contradiction / neutral
    INVALID_CHOICE = "invalid_choice"  # NLU_QA: not a letter of an option the question has
    NOT_A_NUMBER = "not_a_number"  # MATH: the answer is not a plain number
    TOO_LONG = "too_long"  # SUMMARIZATION: more words than max_len_summary
    OVERSIZED = "oversized"  # the reply had far more bytes than max_tokens allows (a broken or hostile teacher)
    # usable replies that a quality gate keeps out of the dataset
    NO_MAJORITY = "no_majority"  # prompt.samples: too few of the teacher's answers agree (min_agreement)
    DISAGREES = "disagrees_with_reference"  # drop_disagreeing: the teacher's answer is not the row's reference answer
    # the teacher call itself failed after its retries
    RATE_LIMITED = "rate_limited"  # 429 after every retry
    TEACHER_ERROR = "teacher_error"  # 5xx / other HTTP error after every retry
    TIMEOUT = "timeout"  # no reply within the request timeout
    CONNECTION = "connection"  # the connection failed or was reset
    REFUSED = "refused"  # the endpoint refused the request (400, 401, 403, 404, 422): retrying will not help
    BUDGET = "budget"  # the job's token budget was spent before this row was sent
    CANCELLED = "cancelled"  # the job was cancelled before this row was sent

    @property
    def quality_gate(self) -> bool:
        """The teacher answered usably, and a quality gate kept the answer out: such rows are counted apart and do
        not count against min_success_ratio."""
        return self in (Reason.NO_MAJORITY, Reason.DISAGREES)

    @property
    def retryable_later(self) -> bool:
        """A later run may succeed where this one failed (the failure was the endpoint's, not the reply's)."""
        return self in (Reason.RATE_LIMITED, Reason.TEACHER_ERROR, Reason.TIMEOUT, Reason.CONNECTION, Reason.BUDGET)
