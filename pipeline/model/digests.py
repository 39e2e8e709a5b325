"""SHA-256 digests of files and directory trees, shared by every stage that pins model files."""

from __future__ import annotations

import hashlib
from pathlib import Path

_CHUNK = 1 << 20


def sha256_file(path: Path | str) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def digest_tree(root: Path | str, exclude: tuple[str, ...] = (".git",)) -> dict[str, str]:
    """Map every regular file under `root` (posix path relative to root) to its SHA-256, sorted by path.

    A path is skipped when any of its components is in `exclude`. Symlinks are followed (an HF cache
    snapshot is a tree of symlinks to blobs); directories themselves are not listed.
    """
    root = Path(root)
    out: dict[str, str] = {}
    for path in root.rglob("*"):
        rel = path.relative_to(root)
        if any(part in exclude for part in rel.parts) or not path.is_file():
            continue
        out[rel.as_posix()] = sha256_file(path)
    return dict(sorted(out.items()))
