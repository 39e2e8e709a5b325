"""The version tag in the team's git repository: an annotated tag per promoted model version.

Idempotent: an existing tag that names the same model revision is left alone (a resumed promotion);
one that names another revision is an error, never overwritten. Pushing to a remote is optional.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.errors import BadInput, InfraError, Refused
from pipeline.util.git import git, is_valid_tag_name


def tag_name(fmt: str, model: str, version: str, file: str = "release.yaml") -> str:
    name = fmt.format(model=model, version=version)
    if not is_valid_tag_name(name):
        raise BadInput(f"{name!r} is not a valid git tag name", file=file, path="promotion.tag_format")
    return name


def repo_root(root: Path) -> Path:
    proc = git("rev-parse", "--show-toplevel", cwd=root, check=False)
    if proc.returncode != 0:
        raise InfraError(f"{root} is not inside a git repository: the version tag cannot be written")
    return Path(proc.stdout.strip())


def tag_message(name: str, fields: dict[str, str]) -> str:
    body = "\n".join(f"{k}: {v}" for k, v in fields.items())
    return f"{name}\n\n{body}\n"


def existing(root: Path, name: str) -> str | None:
    """The annotated tag's message, None if there is no such tag."""
    proc = git("for-each-ref", f"refs/tags/{name}", "--format=%(objecttype) %(contents)", cwd=root, check=False)
    return proc.stdout if proc.stdout.strip() else None


def ensure_tag(root: Path, name: str, fields: dict[str, str], *, actor: str, target: str | None = None,
               remote: str | None = None) -> str:
    """Create the annotated tag (message: `fields`) on `target` (default HEAD) unless it exists with the same
    revision; push it to `remote` when given. Returns 'created' or 'exists'."""
    revision_line = f"revision: {fields['revision']}"
    current = existing(root, name)
    if current is not None:
        if revision_line not in current:
            raise Refused(f"git tag {name} already exists in {root} and names another model revision; "
                          "it is never moved: delete it by hand if it is wrong")
        status = "exists"
    else:
        exists = bool(target) and git("cat-file", "-e", f"{target}^{{commit}}", cwd=root,
                                     check=False).returncode == 0
        commit = target if exists else "HEAD"
        email = actor if "@" in actor else f"{actor}@users.noreply.modelgate"
        ident = {"GIT_COMMITTER_NAME": actor, "GIT_COMMITTER_EMAIL": email}
        proc = git("tag", "-a", name, commit or "HEAD", "-F", "-", cwd=root, check=False,
                   input=tag_message(name, fields), env=ident)
        if proc.returncode != 0:
            if existing(root, name) is not None:  # a racing run made it between our look and our write
                return ensure_tag(root, name, fields, actor=actor, target=target, remote=remote)
            raise InfraError(f"git tag {name} failed: {' '.join(proc.stderr.split())[:300]}")
        status = "created"
    if remote:
        git("push", "--quiet", remote, f"refs/tags/{name}", cwd=root)
    return status
