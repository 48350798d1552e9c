"""The one exception type for mistakes a user can fix (bad data, flags, folders).

Entry points print `str(error)` as a single line and exit non-zero, without a
traceback: the message itself must name the file and line, the weight or the
flag, and say how to fix it.
"""


class UserError(Exception):
    """A mistake in input, configuration or files that the user can fix."""
