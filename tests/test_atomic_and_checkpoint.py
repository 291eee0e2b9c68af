"""Atomic writes (cvexport/atomic.py) and safetensors checkpoints (cvexport/checkpoint.py)."""

from __future__ import annotations

import json

import pytest
import torch

from cvexport.atomic import atomic_path, write_bytes_atomic, write_text_atomic
from cvexport.checkpoint import load_checkpoint, read_metadata, save_checkpoint
from cvexport.digest import sha256_file
from cvexport.errors import CvexportError


def _entries(directory) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def _tree(directory) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


class Boom(RuntimeError):
    pass


# ------------------------------------------------------------------------------ atomic
def test_atomic_file_appears_complete(tmp_path):
    final = tmp_path / "out.txt"
    with atomic_path(final) as tmp:
        assert tmp != final and tmp.parent.parent == tmp_path
        tmp.write_text("hello")
        assert not final.exists()  # nothing under the final name until the block ends
    assert final.read_text() == "hello"
    assert _entries(tmp_path) == ["out.txt"]


# A directory target names what owns it; these tests own every directory they make.
OURS = {"ours": lambda path: True, "what": "test directory"}


def test_atomic_directory_appears_complete(tmp_path):
    final = tmp_path / "bundle"
    with atomic_path(final, **OURS) as tmp:
        tmp.mkdir()
        (tmp / "a.txt").write_text("a")
        (tmp / "sub").mkdir()
        (tmp / "sub" / "b.bin").write_bytes(b"\x00\x01")
        assert not final.exists()
    assert _tree(final) == {"a.txt": b"a", "sub/b.bin": b"\x00\x01"}
    assert _entries(tmp_path) == ["bundle"]


def test_atomic_creates_missing_parents(tmp_path):
    final = tmp_path / "x" / "y" / "z.txt"
    write_text_atomic(final, "deep")
    assert final.read_text() == "deep"
    assert _entries(final.parent) == ["z.txt"]


@pytest.mark.parametrize("kind", ["file", "dir"])
def test_atomic_failure_leaves_nothing(tmp_path, kind):
    final = tmp_path / "target"
    with pytest.raises(Boom):
        with atomic_path(final, **(OURS if kind == "dir" else {})) as tmp:
            if kind == "dir":
                tmp.mkdir()
                (tmp / "partial.txt").write_text("half")
            else:
                tmp.write_text("half")
            raise Boom()
    assert not final.exists()
    assert _entries(tmp_path) == []  # no temp leftovers either


@pytest.mark.parametrize("kind", ["file", "dir"])
def test_atomic_failure_keeps_existing_good_one(tmp_path, kind):
    final = tmp_path / "target"
    if kind == "dir":
        final.mkdir()
        (final / "good.txt").write_text("good")
        (final / "nested").mkdir()
        (final / "nested" / "n.txt").write_text("n")
    else:
        final.write_text("good")
    before = _tree(final) if kind == "dir" else final.read_bytes()
    with pytest.raises(Boom):
        with atomic_path(final, **(OURS if kind == "dir" else {})) as tmp:
            if kind == "dir":
                tmp.mkdir()
                (tmp / "bad.txt").write_text("bad")
            else:
                tmp.write_text("bad")
            raise Boom()
    after = _tree(final) if kind == "dir" else final.read_bytes()
    assert after == before
    assert _entries(tmp_path) == ["target"]


def test_atomic_nothing_written_is_an_error_and_leaves_nothing(tmp_path):
    final = tmp_path / "never.txt"
    with pytest.raises(FileNotFoundError):
        with atomic_path(final):
            pass
    assert _entries(tmp_path) == []


def test_atomic_replaces_existing_directory(tmp_path):
    final = tmp_path / "bundle"
    final.mkdir()
    (final / "old_only.txt").write_text("old")
    (final / "shared.txt").write_text("old")
    with atomic_path(final, **OURS) as tmp:
        tmp.mkdir()
        (tmp / "shared.txt").write_text("new")
        (tmp / "new_only.txt").write_text("new")
    assert _tree(final) == {"new_only.txt": b"new", "shared.txt": b"new"}
    assert _entries(tmp_path) == ["bundle"]


def test_atomic_replaces_existing_file(tmp_path):
    final = tmp_path / "f.bin"
    final.write_bytes(b"old contents, longer than the new")
    write_bytes_atomic(final, b"new")
    assert final.read_bytes() == b"new"
    assert _entries(tmp_path) == ["f.bin"]


def test_atomic_leaves_siblings_alone(tmp_path):
    (tmp_path / "neighbour.txt").write_text("n")
    with pytest.raises(Boom):
        with atomic_path(tmp_path / "target") as tmp:
            tmp.write_text("x")
            raise Boom()
    write_text_atomic(tmp_path / "other.txt", "o")
    assert _entries(tmp_path) == ["neighbour.txt", "other.txt"]


# -------------------------------------------------------------------------- checkpoint
def _tensors():
    gen = torch.Generator().manual_seed(0)
    return {
        "conv.weight": torch.randn(4, 3, 3, 3, generator=gen),
        "bn.num_batches_tracked": torch.tensor(17, dtype=torch.int64),
        "half": torch.randn(5, generator=gen).half(),
        "transposed": torch.arange(12, dtype=torch.float32).reshape(3, 4).t(),  # not contiguous
        "empty": torch.zeros(0, 4),
    }


META = {"model": "ssd", "epoch": 3, "metrics": {"mAP@0.5": 0.5}, "classes": ["a", "b"], "note": "é ünïcode"}


def test_checkpoint_round_trip(tmp_path):
    path = tmp_path / "ckpt.safetensors"
    tensors = _tensors()
    save_checkpoint(path, tensors, META)
    loaded, meta = load_checkpoint(path)
    assert meta == META
    assert set(loaded) == set(tensors)
    for name, tensor in tensors.items():
        assert loaded[name].dtype == tensor.dtype, name
        assert loaded[name].shape == tensor.shape, name
        assert torch.equal(loaded[name], tensor), name
    assert _entries(tmp_path) == ["ckpt.safetensors"]
    assert len(sha256_file(path)) == 64


def test_checkpoint_overwrite_and_empty_meta(tmp_path):
    path = tmp_path / "ckpt.safetensors"
    save_checkpoint(path, {"a": torch.ones(2)}, {"v": 1})
    save_checkpoint(path, {"b": torch.zeros(3)}, {})
    loaded, meta = load_checkpoint(path)
    assert meta == {}
    assert list(loaded) == ["b"] and torch.equal(loaded["b"], torch.zeros(3))


def test_checkpoint_without_cvexport_metadata(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "plain.safetensors"
    save_file({"w": torch.ones(2)}, str(path))
    loaded, meta = load_checkpoint(path)
    assert meta == {} and torch.equal(loaded["w"], torch.ones(2))


def test_checkpoint_failed_save_leaves_nothing(tmp_path):
    path = tmp_path / "ckpt.safetensors"
    with pytest.raises(TypeError):
        save_checkpoint(path, {"a": torch.ones(2)}, {"bad": object()})  # not JSON-serializable
    assert _entries(tmp_path) == []


def test_checkpoint_failed_save_keeps_previous(tmp_path):
    path = tmp_path / "ckpt.safetensors"
    save_checkpoint(path, {"a": torch.ones(2)}, {"v": 1})
    before = path.read_bytes()
    with pytest.raises(TypeError):
        save_checkpoint(path, {"a": torch.zeros(2)}, {"bad": object()})
    assert path.read_bytes() == before
    assert _entries(tmp_path) == ["ckpt.safetensors"]


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _truncate_header(path):
    path.write_bytes(path.read_bytes()[:20])


def _garbage(path):
    path.write_bytes(b"\x89PNG not a checkpoint" * 50)


def _huge_header_length(path):
    data = bytearray(path.read_bytes())
    data[:8] = (2**40).to_bytes(8, "little")
    path.write_bytes(bytes(data))


def _bad_meta_json(path):
    from safetensors.torch import save_file

    save_file({"a": torch.ones(2)}, str(path), metadata={"cvexport": "{not json"})


@pytest.mark.parametrize("read", [load_checkpoint, read_metadata], ids=["load", "metadata"])
@pytest.mark.parametrize(
    "corrupt",
    [_truncate, _truncate_header, _garbage, _huge_header_length, _bad_meta_json, lambda p: p.write_bytes(b"")],
    ids=["truncated", "truncated-header", "garbage", "huge-header-length", "bad-meta-json", "empty"],
)
def test_corrupt_checkpoint_is_one_line_error(tmp_path, corrupt, read):
    """Both readers (tensors and metadata, or metadata alone) refuse a bad file in one line."""
    path = tmp_path / "ckpt.safetensors"
    save_checkpoint(path, _tensors(), META)
    corrupt(path)
    with pytest.raises(CvexportError) as excinfo:
        read(path)
    message = str(excinfo.value)
    assert "\n" not in message
    assert str(path) in message and "corrupt" in message


@pytest.mark.parametrize("read", [load_checkpoint, read_metadata], ids=["load", "metadata"])
@pytest.mark.parametrize("make_dir", [False, True], ids=["missing", "directory"])
def test_missing_checkpoint_is_one_line_error(tmp_path, make_dir, read):
    path = tmp_path / "nope.safetensors"
    if make_dir:
        path.mkdir()
    with pytest.raises(CvexportError) as excinfo:
        read(path)
    message = str(excinfo.value)
    assert "\n" not in message
    assert "not found" in message and str(path) in message


def test_sha256_file_known_value(tmp_path):
    path = tmp_path / "abc"
    path.write_bytes(b"abc")
    assert sha256_file(path) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_meta_is_stored_as_json(tmp_path):
    from safetensors import safe_open

    path = tmp_path / "ckpt.safetensors"
    save_checkpoint(path, {"a": torch.ones(1)}, META)
    with safe_open(str(path), framework="pt") as f:
        assert json.loads(f.metadata()["cvexport"]) == META


def test_read_metadata_without_the_tensors(tmp_path):
    path = tmp_path / "ckpt.safetensors"
    save_checkpoint(path, _tensors(), META)
    assert read_metadata(path) == load_checkpoint(path)[1] == json.loads(json.dumps(META))
