"""The one exception type for mistakes a user can cause and fix."""


class FarmError(Exception):
    """A user-facing error: its message is one sentence saying what, where, and how to fix it.

    The CLI prints it without a traceback and exits non-zero.
    """
