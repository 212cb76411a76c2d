"""The live progress line of `distill run`: rows done and rejected, tokens, rate, ETA.

The rate is measured over the last RATE_WINDOW seconds, not since the start: a run that continues a job replays the
rows already answered from the response cache in a burst, and a rate since the start would promise an ETA that
burst cannot keep.
"""

from __future__ import annotations

import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import TextIO

RATE_WINDOW = 300.0  # seconds of progress the rate (and so the ETA) is measured over


class ProgressBar:
    """Thread-safe counters drawn on one line (a terminal) or printed every few seconds (a log)."""

    def __init__(self, total: int, *, done: int = 0, rejected: int = 0, tokens: int = 0,
                 stream: TextIO | None = None, width: int = 24,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.total, self.done, self.rejected, self.tokens = total, done, rejected, tokens
        self.stream, self.width = stream or sys.stderr, width
        self._clock = clock
        self._history: deque[tuple[float, int]] = deque([(clock(), done)])  # (when, rows done) over the window
        self._drawn = 0.0
        self._lock = threading.Lock()
        self._tty = self.stream.isatty()
        self._wait: tuple[float, str] | None = None  # until (monotonic), why: the longest wait now in progress
        self._open = False  # a terminal's bar line is drawn and not ended yet
        self._pace: tuple[float, str] | None = None  # the teacher's calls a minute now, and where that comes from

    def row_done(self, job: str, accepted: int, rejected: int, tokens: int) -> None:
        """One row finished (`shared.ports.Progress`)."""
        with self._lock:
            self.done += accepted + rejected
            self.rejected += rejected
            self.tokens += tokens
            now = self._clock()
            self._history.append((now, self.done))
            while len(self._history) > 2 and self._history[1][0] <= now - RATE_WINDOW:
                self._history.popleft()  # the oldest kept is the last one at or before the window's start
            if now - self._drawn >= (0.1 if self._tty else 5.0) or self.done >= self.total:
                self._drawn = now
                self._draw()

    def waiting(self, job: str, seconds: float, why: str) -> None:
        """A call waits `seconds` before it goes to the teacher (`shared.ports.Progress`): shown until it is over."""
        with self._lock:
            now = self._clock()
            if self._wait is None or now + seconds > self._wait[0]:
                self._wait = (now + seconds, why)
            self._drawn = now
            self._draw()

    def paced(self, job: str, per_minute: float, source: str) -> None:
        """The teacher's pace now (`shared.ports.Progress`): shown on the line."""
        with self._lock:
            self._pace = (per_minute, source)

    def step(self, job: str, what: str) -> None:
        """A long step begins (`shared.ports.Progress`): said on a line of its own, below the bar."""
        with self._lock:
            self.stream.write(("\n" if self._open else "") + f"{what}\n")
            self._open = False
            self.stream.flush()

    def line(self) -> str:
        now = self._clock()
        since, done_then = self._history[0]
        rate = (self.done - done_then) / max(now - since, 1e-6)
        left = self.total - self.done
        eta = f"{left / rate:.0f}s" if rate > 0 and left > 0 else "-"
        filled = int(self.width * self.done / self.total) if self.total else self.width
        bar = "#" * filled + "." * (self.width - filled)
        wait = ""
        if self._wait is not None and (left_s := self._wait[0] - now) > 0:
            wait = f", waiting {left_s:.0f}s for {self._wait[1]}"
        pace = f", pace {self._pace[0]:,.0f} calls/min {self._pace[1]}" if self._pace else ""
        return (f"[{bar}] {self.done}/{self.total} rows, {self.rejected} rejected, {self.tokens:,} tokens, "
                f"{rate * 60:.0f} rows/min, ETA {eta}{pace}{wait}")

    def _draw(self) -> None:
        if self._tty:
            self.stream.write("\r" + self.line() + "\x1b[K")
            self._open = True
        else:
            self.stream.write(self.line() + "\n")
        self.stream.flush()

    def finish(self) -> None:
        with self._lock:
            if self.done < self.total:  # a full bar was drawn by the last row already
                self._draw()
            if self._open:
                self.stream.write("\n")
                self._open = False
            self.stream.flush()
