"""User-facing errors: the CLI prints these as one line and exits non-zero, never a traceback."""


class CvexportError(Exception):
    """A problem the user can fix; the message says what was wrong and what to do."""

    exit_code = 2


def stderr_warning(line: str) -> None:
    """A warning line on stderr, in the CLI's format."""
    import sys

    print(f"cvexport: warning: {line}", file=sys.stderr, flush=True)
