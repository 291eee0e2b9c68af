"""Atomic writes: a file or directory appears complete under its final name, or not at all."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``final``; rename it over ``final`` only if the block succeeds.

    Works for a file or a directory written at the yielded path. A directory that already
    exists at ``final`` is replaced only after the new one is complete, so a failed build
    never clobbers a good one.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp_root = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    tmp = tmp_root / final.name
    try:
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(f"nothing was written to {tmp}")
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
