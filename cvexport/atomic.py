"""Atomic writes: a file or directory appears complete under its final name, or not at all.

Atomic replacement is right for cvexport's own artifacts and wrong for anything else: a file
is never written over a directory, and a directory is replaced only when it is empty or one
of ours (``ours(path)`` says so: a bundle's manifest), unless the user forces it. The checks
run before any work (``check_file_target`` / ``check_dir_target``, called by the commands as
they start) and again when the result is moved into place.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Iterator

from cvexport.errors import CvexportError


class OutputPathError(CvexportError):
    """An output path that would destroy something that is not cvexport's to replace."""


def _check_parent(final: Path) -> None:
    for parent in final.parents:
        if parent.exists():
            if not parent.is_dir():
                raise OutputPathError(f"{parent} is a file, so {final} cannot be written inside it; choose another path")
            return


def check_file_target(final: str | os.PathLike, option: str = "output") -> Path:
    """``final`` as a Path, after checking a file may be written there (an existing file is
    replaced; a directory is never replaced by a file)."""
    final = Path(final)
    if final.is_dir():
        raise OutputPathError(f"{option} {final} is a directory, where a file is expected; nothing was written. "
                              f"Give a file name, e.g. {final / ('result' + (final.suffix or '.json'))}")
    _check_parent(final)
    return final


def check_dir_target(final: str | os.PathLike, ours: Callable[[Path], bool], what: str, option: str = "--out",
                     force: bool = False) -> Path:
    """``final`` as a Path, after checking a ``what`` directory may be put there: it does not
    exist, is empty, is one of ours (``ours(final)``), or ``force`` is set."""
    final = Path(final)
    if final.exists() or final.is_symlink():
        if not final.is_dir():
            raise OutputPathError(f"{option} {final} is a file, where a {what} directory is expected; choose another path")
        if not force and any(final.iterdir()) and not ours(final):
            raise OutputPathError(
                f"{option} {final} holds files that are not a {what}; refusing to replace them. Choose another "
                f"{option}, or pass --force to replace that directory and everything in it"
            )
    _check_parent(final)
    return final


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike, ours: Callable[[Path], bool] | None = None, what: str = "",
                force: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``final``; rename it over ``final`` only if the block succeeds.

    Works for a file or a directory written at the yielded path. For a directory, pass
    ``ours`` (and ``what`` it is): an existing directory at ``final`` is replaced only when
    :func:`check_dir_target` allows it, and only after the new one is complete, so a failed
    build never clobbers a good one. Without ``ours``, ``final`` must not be a directory.
    """
    final = Path(final)
    if ours is None:
        check_file_target(final)
    else:
        check_dir_target(final, ours, what, force=force)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp_root = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    tmp = tmp_root / final.name
    try:
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(f"nothing was written to {tmp}")
        # Again at the last moment: the target may have changed while the work ran.
        if ours is None:
            check_file_target(final)
        else:
            check_dir_target(final, ours, what, force=force)
        if final.is_dir() and not final.is_symlink():
            # Two renames: move the old one aside, the new one in, then drop the old.
            old = tmp_root / (final.name + ".old")
            os.replace(final, old)
            os.replace(tmp, final)
        else:
            os.replace(tmp, final)
    finally:
        shutil.rmtree(tmp_root, ignore_errors=True)


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))
