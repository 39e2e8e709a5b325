"""A pin: a model at an exact commit with the sha256 of every file (`candidate:` in release.yaml, and every
recorded version's pin)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, cast, get_args

from pydantic import Field

from pipeline.config.fields import SECTION, doc

PinSource = Literal["huggingface", "git"]
Sha256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
FileName = Annotated[str, Field(pattern=r"^[^/][^\\]*$")]


def pin_source(value: str) -> PinSource:
    """A pin's source from untyped data (a report, a registry tag); ValueError when it is not one."""
    if value not in get_args(PinSource):
        raise ValueError(f"pin source {value!r} is not one of {', '.join(get_args(PinSource))}")
    return cast(PinSource, value)


@dataclass(frozen=True)
class Pin:
    """A model at an exact commit, with the expected sha256 of every file (the lock)."""

    __pydantic_config__ = SECTION

    source: Annotated[PinSource, doc("where the weights are: a Hugging Face model repo or a git repository")]
    repo: Annotated[str, doc("HF repo id, git URL, or a path (relative paths are resolved against release.yaml)",
                             min_length=1)]
    revision: Annotated[str, doc("the full 40-hex commit sha (`modelgate lock --revision <sha>` writes it and the "
                                 "files)", pattern=r"^[0-9a-f]{40}$")]
    files: Annotated[dict[FileName, Sha256], doc(
        "the lock: every file of the model at that commit -> its sha256 (`modelgate lock` writes it)")] = \
        field(default_factory=dict)
    allow_pickle: Annotated[bool, doc("accept pickle weights (.bin, .pt, ...): they can run code when "
                                      "loaded")] = False
    trust_remote_code: Annotated[bool, doc("run the model repo's own code (vLLM --trust-remote-code); the repo "
                                           "must be in security.remote_code_allowlist")] = False

    @property
    def short(self) -> str:
        return self.revision[:12]

    def uri(self) -> str:
        scheme = "hf" if self.source == "huggingface" else "git"
        return f"{scheme}://{self.repo}@{self.revision}"


def pin_from_dict(d: dict[str, Any]) -> Pin:
    return Pin(
        source=pin_source(d["source"]),
        repo=d["repo"],
        revision=d["revision"],
        files=dict(sorted((d.get("files") or {}).items())),
        allow_pickle=bool(d.get("allow_pickle", False)),
        trust_remote_code=bool(d.get("trust_remote_code", False)),
    )


def revision_problem(revision: Any) -> str:
    shown = repr(revision)
    if not isinstance(revision, str):
        return (f"revision {shown} is not a string (YAML reads an unquoted all-digit value as a number: quote "
                "it); pins must be a full 40-hex commit sha")
    if revision.lower() in {"main", "master", "latest", "head"}:
        why = "a branch name moves"
    elif re.fullmatch(r"[0-9a-fA-F]{4,39}", revision):
        why = "a short sha is ambiguous and can collide"
    elif re.fullmatch(r"[0-9A-F]{40}", revision):
        why = "write it in lowercase"
    else:
        why = "a branch or tag name can be moved to other weights"
    return (f"revision {shown} is not a pinned commit ({why}); pins must be a full 40-hex commit sha "
            "so the gate judges exactly the weights that ship (run `modelgate lock --revision <sha>`)")
