"""User-facing errors: the CLI prints these as one line and exits non-zero, never a traceback."""


class CvexportError(Exception):
    """A problem the user can fix; the message says what was wrong and what to do."""

    exit_code = 2


def stderr_warning(line: str) -> None:
    """A warning line on stderr, in the CLI's format."""
    import sys

    print(f"cvexport: warning: {line}", file=sys.stderr, flush=True)


def counted(number: int, noun: str, plural: str | None = None) -> str:
    """'1 input', '2 inputs', '0 inputs': counts in messages read as English."""
    return f"{number} {noun if number == 1 else plural or noun + 's'}"


def first_line(exc: BaseException) -> str:
    """The first line of ``exc``'s message (its class name when it has none): a library's
    multi-line error, quoted inside one of ours, keeps that one line."""
    text = str(exc).strip().splitlines()
    return text[0] if text else exc.__class__.__name__
