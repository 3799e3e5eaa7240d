"""Status lines off a terminal (legoc.cli.common.StatusLines): one line when a phase ends, at
most one every STATUS_INTERVAL seconds while it runs, each end printed once."""

from __future__ import annotations

from legoc.cli.common import StatusLines


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def lines(capsys) -> list[str]:
    return capsys.readouterr().err.splitlines()


def test_a_running_phase_prints_at_most_one_line_per_interval(capsys):
    clock = Clock()
    status = StatusLines(clock)
    for step in range(1, 300):
        clock.now = step * 0.1  # 30 s of steps, one every 0.1 s
        status("mask training", step, 300)
    assert lines(capsys) == [
        "legoc: mask training 100/300 steps, 10 s",
        "legoc: mask training 200/300 steps, 20 s",
    ]


def test_an_early_end_prints_what_was_used_of_the_first_total_once(capsys):
    clock = Clock()
    status = StatusLines(clock)
    status("capture", 0, 1)
    status("capture", 1, 1)
    status("search", 5, 2000)
    clock.now = 14.2
    status("search", 120, 2000)
    status("search", 390, 390)  # the search ends: its total lowered to the budget used
    status("search", 390, 390)  # ...reported again: printed once
    status.finish()
    assert lines(capsys) == [
        "legoc: capture done, 0 s",
        "legoc: search 120/2000 evaluations, 14 s",
        "legoc: search done, 390/2000 evaluations, 14 s",
        "legoc: done, 14 s",
    ]


def test_a_phase_entered_again_ends_again(capsys):
    status = StatusLines(Clock())
    status("minimize", 10, 100)
    status("minimize", 20, 20)
    status("minimize", 30, 100)
    status("minimize", 40, 40)
    assert lines(capsys) == [
        "legoc: minimize done, 20/100 evaluations, 0 s",
        "legoc: minimize done, 40/100 evaluations, 0 s",
    ]
