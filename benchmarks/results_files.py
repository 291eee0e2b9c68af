"""Where every benchmark leaves its numbers: ``NAME.json`` (the record) and ``NAME.md`` (the table
the README quotes), side by side in one results folder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def write_results(out: str | Path, name: str, record: dict[str, Any], markdown: str, indent: int = 2) -> None:
    """Write ``out/NAME.json`` and ``out/NAME.md`` (creating ``out``) and print the table."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(record, indent=indent) + "\n")
    (out / f"{name}.md").write_text(markdown)
    print(markdown)
