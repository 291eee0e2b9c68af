"""What ``stream --out DIR`` may write over: its own earlier outputs, nothing else.

A stream writes ``DIR/<name>.jsonl``, ``DIR/<name>.mp4`` and ``DIR/summary.json``, where
``<name>`` comes from the source (``clip.mp4`` -> ``clip``), so ``--out`` is often the very
folder the sources live in. The rules, checked before any work:

* an output is never a source (the same file by path, symlink or hard link): refused in one
  line, even with ``--force``, since reading a file while writing over it destroys it;
* a file at an output path is replaced only when it is ours: listed by the summary.json of an
  earlier run into DIR (one with our ``format``), or that summary.json itself. Anything else
  is refused in one line naming it, unless ``--force``;
* a re-run removes the outputs the earlier summary lists (not a source, not a symlink), so no
  stale source's files sit beside the new ones.

The summary is written when a run starts (listing what it will write) and again when it ends,
so a run killed with SIGKILL still leaves a summary.json that names its outputs as ours.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from cvexport.errors import CvexportError

SUMMARY = "summary.json"
SUMMARY_FORMAT = "cvexport-stream-summary/1"
OUTPUT_SUFFIXES = (".jsonl", ".mp4")


class OutputConflict(CvexportError):
    """An output path holding a source or a file this command did not write."""


def read_our_summary(out: Path) -> dict | None:
    """The summary.json in ``out`` when it is one of ours (our ``format``), else None."""
    try:
        summary = json.loads((Path(out) / SUMMARY).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if isinstance(summary, dict) and str(summary.get("format", "")).startswith(SUMMARY_FORMAT.split("/")[0] + "/"):
        return summary
    return None


def listed_outputs(summary: dict | None) -> set[str]:
    """The bare output names an earlier summary of ours lists (never a path that leaves --out)."""
    names = set()
    for entry in (summary or {}).get("sources") or []:
        if not isinstance(entry, dict):
            continue
        for key in ("jsonl", "video"):
            name = entry.get(key)
            if isinstance(name, str) and os.sep not in name and "/" not in name and name.endswith(OUTPUT_SUFFIXES) \
                    and name not in (".", ".."):
                names.add(name)
    return names


def _file_id(path: Path) -> tuple[int, int] | None:
    """(device, inode) of the file ``path`` leads to (through symlinks); None when there is none."""
    try:
        st = os.stat(path)
    except OSError:  # gone, or a dangling link: no existing file
        return None
    return st.st_dev, st.st_ino


def _sources_by_id(inputs: list[Path]) -> dict[tuple[int, int], Path]:
    """The inputs by file identity: the same file by any path, symlink or hard link matches
    (as os.path.samefile compares them), whatever the case of its name on the disk."""
    found = {}
    for source in inputs:
        key = _file_id(source)
        if key is not None:
            found.setdefault(key, source)
    return found


def check_outputs(out: Path, names: list[str], inputs: list[Path], force: bool = False) -> list[Path]:
    """Check that the run may write the outputs ``names`` (bare file names) into ``out``, reading
    the local files ``inputs``; raise :class:`OutputConflict` (one line) when it may not.

    Returns the files to remove before writing: the earlier run's outputs (listed by its
    summary) and whatever sits at an output path (ours, or any file with ``force``).
    """
    from cvexport.atomic import check_file_target

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise OutputConflict(f"--out {out} is a file; pass a directory")
    summary = read_our_summary(out)
    ours = listed_outputs(summary) | ({SUMMARY} if summary is not None else set())
    sources = _sources_by_id(inputs)
    remove: list[Path] = []
    for name in names:
        path = out / name
        check_file_target(path, "--out")
        source = sources.get(_file_id(path))
        if source is not None:
            raise OutputConflict(f"--out {out}: the output {path} would be written over the source {source}; "
                                 "choose another --out (--force does not allow this)")
        if not (path.exists() or path.is_symlink()):
            continue
        # A symlink is never ours (we write plain files): replacing it needs --force, and then
        # the link is removed, never written through.
        if not force and (name not in ours or path.is_symlink()):
            raise OutputConflict(f"--out {out} holds {path}, which 'cvexport stream' did not write; refusing to "
                                 "replace it. Choose another --out, or pass --force to replace it")
        remove.append(path)
    for name in sorted(listed_outputs(summary) - set(names)):
        path = out / name
        if path.is_file() and not path.is_symlink() and _file_id(path) not in sources:
            remove.append(path)
    return remove


def remove_outputs(paths: list[Path]) -> None:
    """Remove what :func:`check_outputs` allowed, so every output is then created new (never
    written through a link or into a file another name shares)."""
    for path in paths:
        try:
            path.unlink()
        except FileNotFoundError:
            pass


def source_inputs(specs) -> list[Path]:
    """The local files the sources read: video files and every image of image sources."""
    inputs: list[Path] = []
    for spec in specs:
        if spec.kind == "file":
            inputs.append(Path(spec.target))
        elif spec.kind == "images":
            inputs.extend(Path(p) for p in spec.images)
    return inputs
