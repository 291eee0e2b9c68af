"""The bundle layer is the one reader of a manifest, and only tasks and registries name a task.

- Outside cvexport/bundle.py, cvexport/manifest.py and cvexport/manifest_schema.py nothing
  indexes a manifest dict (``manifest["model"]``, ``bundle.manifest.get("postprocess")``,
  ``"weights" in bundle.manifest``, ``bundle.input["name"]``): they read the typed
  :class:`cvexport.manifest.Manifest` instead, so a field is parsed once and named once.
- Outside the task modules and the registries no code branches on a task's or a model's name
  (``task == "detection"``, ``spec.name == "ssd"``): what differs by task the task says.

Both scans are of the source (AST and text), as tests/test_architecture.py reads imports.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCANNED = ("cvexport", "models")
BUNDLE_LAYER = {"cvexport/bundle.py", "cvexport/manifest.py", "cvexport/manifest_schema.py"}

# Where a task may be named: the task modules and the registries.
TASK_HOMES = {"cvexport/task_base.py", "cvexport/tasks.py", "cvexport/registry.py", "cvexport/detection.py",
              "cvexport/classification.py", "cvexport/segmentation.py", "cvexport/style.py"}
TASK_BRANCH = re.compile(r"""\btask\s*[!=]=\s*["']|\bspec\.name\s*[!=]=\s*["']""")


def _sources() -> dict[str, str]:
    return {path.relative_to(ROOT).as_posix(): path.read_text()
            for folder in SCANNED for path in sorted((ROOT / folder).rglob("*.py"))}


def _is_manifest(node: ast.AST) -> bool:
    """``manifest``, ``x.manifest`` (a bundle's), or ``bundle.input`` / ``x.bundle.input``."""
    if isinstance(node, ast.Name):
        return node.id == "manifest"
    if isinstance(node, ast.Attribute):
        if node.attr == "manifest":
            return True
        if node.attr == "input":
            owner = node.value
            return (isinstance(owner, ast.Name) and owner.id == "bundle") or \
                (isinstance(owner, ast.Attribute) and owner.attr == "bundle")
    return False


def dict_reads(source: str) -> list[int]:
    """Lines where ``source`` indexes a manifest as a dict: a subscript, ``.get(`` or ``in``."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Subscript) and _is_manifest(node.value):
            lines.append(node.lineno)
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get" \
                and _is_manifest(node.func.value):
            lines.append(node.lineno)
        elif isinstance(node, ast.Compare) and any(isinstance(op, (ast.In, ast.NotIn)) for op in node.ops) \
                and any(_is_manifest(c) for c in node.comparators):
            lines.append(node.lineno)
    return sorted(set(lines))


def task_branches(source: str) -> list[int]:
    return [number for number, line in enumerate(source.splitlines(), 1)
            if TASK_BRANCH.search(line.split("#", 1)[0])]


@pytest.mark.parametrize("snippet", [
    'x = bundle.manifest["model"]',
    'x = manifest.get("postprocess", {})',
    'x = [o["name"] for o in self.bundle.manifest["outputs"]]',
    'ok = "weights" not in bundle.manifest',
    'name = predictor.bundle.input["name"]',
    'fit = bundle.input.get("letterbox")',
])
def test_the_scan_finds_a_dict_read(snippet):
    assert dict_reads(snippet) == [1]


def test_the_scan_passes_typed_reads():
    assert dict_reads("x = bundle.manifest.model\ny = bundle.input.name\nz = graph.input[0]\n"
                      "w = bundle.manifest.outputs[0].shape\n") == []


def test_no_manifest_dict_reads_outside_the_bundle_layer():
    found = {path: lines for path, source in _sources().items()
             if path not in BUNDLE_LAYER and (lines := dict_reads(source))}
    assert found == {}, f"read the typed Manifest (cvexport.manifest) instead: {found}"


def test_the_task_scan_finds_a_branch():
    assert task_branches('if spec.task == "style":\n    pass\nif spec.name != "ssd":\n    pass\n') == [1, 3]
    assert task_branches('if get_spec(model).task != task:  # "detection"\n    pass\n') == []


def test_only_tasks_and_registries_name_a_task():
    found = {path: lines for path, source in _sources().items()
             if path not in TASK_HOMES and (lines := task_branches(source))}
    assert found == {}, f"ask the task (cvexport.tasks.get_task) instead of naming it: {found}"
