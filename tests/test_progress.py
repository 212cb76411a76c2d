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
