"""The pipeline's async work, run from its synchronous handlers so that the host can stop it: `run` is
`asyncio.run` for a handler, and `cancel_all` cancels every such run in the process (the local runtime calls it on
Ctrl-C, so teacher calls that hang do not hold the process). A cancelled handler raises CancelledError; its message
is delivered again later, and what it had already received stays in the response cache."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

_running: set[tuple[asyncio.AbstractEventLoop, asyncio.Task[Any]]] = set()
_lock = threading.Lock()


def run(work: Coroutine[Any, Any, T]) -> T:
    """`asyncio.run(work)`, cancellable from another thread by `cancel_all`."""

    async def tracked() -> T:
        task = asyncio.current_task()
        assert task is not None
        entry = (asyncio.get_running_loop(), task)
        with _lock:
            _running.add(entry)
        try:
            return await work
        finally:
            with _lock:
                _running.discard(entry)

    return asyncio.run(tracked())


def cancel_all() -> None:
    """Cancel every run in progress."""
    with _lock:
        entries = list(_running)
    for loop, task in entries:
        loop.call_soon_threadsafe(task.cancel)
