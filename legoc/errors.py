"""The two ways a run can fail on purpose; the CLI maps them to exit codes (DESIGN §3.4)."""


class LegocError(Exception):
    """Bad input or usage: one line saying what is wrong and how to fix it (exit code 2)."""

    exit_code = 2


class TaskNotMet(LegocError):
    """The input was fine but the task could not be met, e.g. no rationale reaches `keep`."""

    exit_code = 1


class Interrupted(KeyboardInterrupt):
    """Ctrl-C (or SIGTERM) during a run: still a KeyboardInterrupt, with a message saying where
    the run stopped, what was kept and how to go on (the CLI prints it and exits with
    `exit_code`: 130 for Ctrl-C, 143 for SIGTERM)."""

    exit_code = 130

    def __init__(self, message: str = "", exit_code: int | None = None):
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class Terminated(KeyboardInterrupt):
    """SIGTERM (what `timeout`, systemd, Kubernetes and CI send to stop a job), raised by the
    CLI's signal handler so the run cleans up exactly as on Ctrl-C (exit code 143)."""

    exit_code = 143
