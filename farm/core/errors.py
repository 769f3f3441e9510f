"""The exceptions for mistakes a user can cause and fix, and the exit codes the `farm` command ends with."""

# `farm`'s exit codes (listed in `farm --help` and the README's CLI section).
EXIT_OK = 0
EXIT_CHECK_FAILED = (
    1  # the command ran and found a problem: `farm verify`, `farm qc`, a demo clip that failed
)
EXIT_USAGE = 2  # an unknown option, a missing argument, an option's value outside what it allows
EXIT_BAD_INPUT = 3  # a FarmError: a bad setting, file, name or value the farm refused
EXIT_UNAVAILABLE = 4  # a ServiceUnavailable: the database, broker or storage could not be reached


class FarmError(Exception):
    """A user-facing error: its message is one sentence saying what, where, and how to fix it.

    The CLI prints it without a traceback and exits with `exit_code`.
    """

    exit_code = EXIT_BAD_INPUT


class BadUsage(FarmError):
    """An option's value outside what the option allows, found by the farm's own check rather than by the
    command line's parser (a --time limit, a --where filter): bad usage, the same exit code as the parser's."""

    exit_code = EXIT_USAGE


class ServiceUnavailable(FarmError):
    """A server the farm needs (database, broker, S3 storage) cannot be reached: worth retrying later."""

    exit_code = EXIT_UNAVAILABLE
