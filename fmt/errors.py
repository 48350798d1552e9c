"""The one exception type for mistakes a user can fix (bad data, flags, folders).

Entry points print `str(error)` as a single line and exit non-zero, without a
traceback: the message itself must name the file and line, the weight or the
flag, and say how to fix it.
"""


class UserError(Exception):
    """A mistake in input, configuration or files that the user can fix."""


class Preempted(Exception):
    """The run was asked to stop (SIGTERM, SIGINT) and saved a checkpoint first."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.signum = signum
