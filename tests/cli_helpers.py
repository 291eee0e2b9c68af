"""Assertions shared by the CLI-level tests."""


def one_line_stderr(capsys) -> str:
    """The CLI's stderr, asserted to be exactly one 'cvexport: error: ...' line."""
    err = capsys.readouterr().err.strip()
    assert err.startswith("cvexport: error: ") and "\n" not in err, err
    return err
