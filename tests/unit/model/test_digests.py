"""sha256_file and digest_tree."""

from __future__ import annotations

import hashlib
import os

from pipeline.model.digests import digest_tree, sha256_file


def test_sha256_file_matches_hashlib_across_chunks(tmp_path):
    data = os.urandom((1 << 20) * 2 + 123)  # spans several 1 MiB chunks
    path = tmp_path / "blob"
    path.write_bytes(data)
    assert sha256_file(path) == hashlib.sha256(data).hexdigest()
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    assert sha256_file(str(empty)) == hashlib.sha256(b"").hexdigest()


def test_digest_tree_relative_sorted_excluding_git(tmp_path):
    (tmp_path / "b.txt").write_bytes(b"b")
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "z.json").write_bytes(b"{}")
    (tmp_path / ".git" / "objects").mkdir(parents=True)
    (tmp_path / ".git" / "HEAD").write_bytes(b"ref")
    (tmp_path / "sub" / ".git").mkdir(parents=True)
    (tmp_path / "sub" / ".git" / "x").write_bytes(b"x")

    tree = digest_tree(tmp_path)
    assert list(tree) == ["a/z.json", "b.txt"]
    assert tree["b.txt"] == hashlib.sha256(b"b").hexdigest()
    assert tree["a/z.json"] == hashlib.sha256(b"{}").hexdigest()
    assert list(digest_tree(tmp_path, exclude=())) == [".git/HEAD", "a/z.json", "b.txt", "sub/.git/x"]


def test_digest_tree_follows_symlinks(tmp_path):
    blob = tmp_path / "blobs" / "abc"
    blob.parent.mkdir()
    blob.write_bytes(b"weights")
    snap = tmp_path / "snap"
    snap.mkdir()
    (snap / "model.safetensors").symlink_to(os.path.relpath(blob, snap))
    assert digest_tree(snap) == {"model.safetensors": hashlib.sha256(b"weights").hexdigest()}
