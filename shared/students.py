"""Asking a student the evaluation's questions over the OpenAI-compatible chat API, whatever serves it: a serverless
endpoint, an endpoint the user names, or a model served on this machine. Greedy (temperature 0), a few calls in flight
(as many as a model served here batches well), each retried by the teacher client's policy. Importing this module
imports openai: only the evaluation step does.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from shared.evaluation import EvalItem
from shared.manifest.model import InferenceParameters, TeacherSettings
from shared.teacher.factory import teacher_for
from shared.teacher.replies import TeacherCallFailed

IN_FLIGHT = 8  # calls in flight to one student, unless its deployment says how many it answers well at once


@dataclass(frozen=True, slots=True)
class Reach:
    """How one student is reached: the endpoint's settings, where its key is read, for a model served on this
    machine its address, and how many calls to keep in flight (None: IN_FLIGHT)."""

    settings: TeacherSettings
    environ: Mapping[str, str]
    local_url: str | None = None
    in_flight: int | None = None


@dataclass(frozen=True, slots=True)
class Answers:
    """A student's replies to the items, in order (None where the call failed), what they cost, and the failures."""

    replies: list[str | None]
    prompt_tokens: int
    completion_tokens: int
    failures: list[str]  # one reason per failed call, in order

    @property
    def failed(self) -> int:
        return len(self.failures)


def ask(reach: Reach, items: Sequence[EvalItem], max_tokens: int) -> Answers:
    """Ask every item (its messages as the student was trained on them); TeacherConfigError when the endpoint cannot
    be called at all as configured (an unset key setting, no URL)."""
    return asyncio.run(_ask(reach, items, max_tokens))


async def _ask(reach: Reach, items: Sequence[EvalItem], max_tokens: int) -> Answers:
    inference = InferenceParameters(temperature=0.0, max_tokens=max_tokens)
    replies: list[str | None] = [None] * len(items)
    failures: list[str] = []
    usage = [0, 0]
    gate = asyncio.Semaphore(reach.in_flight or IN_FLIGHT)
    async with teacher_for(reach.settings, inference, environ=reach.environ, local_url=reach.local_url) as student:

        async def one(index: int, item: EvalItem) -> None:
            async with gate:
                try:
                    reply = await student.complete(list(item.messages))
                except TeacherCallFailed as failed:
                    failures.append(str(failed))
                    return
            replies[index] = reply.content
            usage[0] += reply.usage.prompt_tokens
            usage[1] += reply.usage.completion_tokens

        await asyncio.gather(*(one(index, item) for index, item in enumerate(items)))
    return Answers(replies, usage[0], usage[1], failures)

