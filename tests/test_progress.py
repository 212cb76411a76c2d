"""The live progress line of `distill run`, on a terminal and in a log, and the steps said below it."""

import io

from shared.local.progress import ProgressBar


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_on_a_terminal_the_bar_is_redrawn_in_place_and_a_step_starts_a_line_below_it() -> None:
    stream = Terminal()
    bar = ProgressBar(2, stream=stream)
    bar.row_done("j", 1, 0, 10)
    bar.row_done("j", 0, 1, 5)
    bar.step("j", "job j: asking the distilled student 2 validation rows")
    bar.finish()
    text = stream.getvalue()
    assert text.count("\r") == 2 and "[########################] 2/2 rows, 1 rejected, 15 tokens" in text
    assert text.endswith("\x1b[K\njob j: asking the distilled student 2 validation rows\n")  # no blank line after


def test_in_a_log_each_drawing_is_a_line_and_so_is_a_step() -> None:
    stream = io.StringIO()
    bar = ProgressBar(1, stream=stream)
    bar.step("j", "job j: deploying j-distilled for the evaluation")
    bar.row_done("j", 1, 0, 3)
    bar.finish()
    lines = stream.getvalue().splitlines()
    assert lines[0] == "job j: deploying j-distilled for the evaluation"
    assert lines[1].startswith("[########################] 1/1 rows") and len(lines) == 2


def test_the_teachers_pace_and_its_source_are_on_the_line() -> None:
    stream = io.StringIO()
    bar = ProgressBar(2, stream=stream)
    bar.paced("j", 598.4, "learned")
    bar.row_done("j", 2, 0, 3)
    assert "pace 598 calls/min learned" in stream.getvalue()


def test_the_rate_and_eta_follow_the_last_minutes_not_a_burst_of_cached_rows_at_the_start() -> None:
    """A job continued after an interruption replays its answered rows from the response cache in seconds, then labels
    a row every 30 s: the line says 2 rows a minute, and an ETA to match, once the burst is minutes behind."""
    now = [0.0]
    stream = io.StringIO()
    bar = ProgressBar(420, done=10, stream=stream, clock=lambda: now[0])
    for _ in range(67):  # the replay: 67 rows in 6.7 s
        now[0] += 0.1
        bar.row_done("j", 1, 0, 0)
    for _ in range(20):  # then ten minutes of fresh rows
        now[0] += 30
        bar.row_done("j", 1, 0, 300)
    assert "97/420 rows" in bar.line() and ", 2 rows/min, ETA 9690s" in bar.line()
