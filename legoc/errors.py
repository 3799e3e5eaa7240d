"""The two ways a run can fail on purpose; the CLI maps them to exit codes (DESIGN §3.4)."""


class LegocError(Exception):
    """Bad input or usage: one line saying what is wrong and how to fix it (exit code 2)."""

    exit_code = 2


class TaskNotMet(LegocError):
    """The input was fine but the task could not be met, e.g. no rationale reaches `keep`."""

    exit_code = 1


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during a run: still a KeyboardInterrupt, with a message saying where the run
    stopped, what was kept and how to go on (the CLI prints it and exits with 130)."""

    exit_code = 130
