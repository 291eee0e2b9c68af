"""User-facing errors: the CLI prints these as one line and exits non-zero, never a traceback."""


class CvexportError(Exception):
    """A problem the user can fix; the message says what was wrong and what to do."""

    exit_code = 2
