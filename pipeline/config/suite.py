"""Prompt suites (prompts/*.yaml): load, validate, and build the typed, frozen `Suite` of `PromptCase`s.

A suite is validated in two steps: the packaged JSON Schema (schemas/suite.schema.json) checks the shape,
then `_build` checks what a schema cannot: unique case ids, `$file` references that exist inside the
prompts directory, regexes that compile and embedded JSON Schemas that are themselves valid. Every
problem is a `ConfigError` naming the file and the case (`cases[id=order_extract_2].expect.regex`), one line.

`suite_digest` hashes the canonical content (defaults merged, `$file` schemas inlined) so the gate can tell
whether the suites changed since the baseline was evaluated. Reading the suite files is the only I/O here.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.config.yamlio import load_yaml
from pipeline.errors import ConfigError
from pipeline.util.jsonpath import format_path

if TYPE_CHECKING:
    from jsonschema.exceptions import ValidationError

DEFAULT_MAX_TOKENS = 256
SUITE_SUFFIXES = (".yaml", ".yml")


@dataclass(frozen=True)
class Message:
    role: str  # system | user | assistant
    content: str


@dataclass(frozen=True)
class Sampling:
    """Request parameters; the suite's `defaults.sampling` merged under the case's own `sampling`."""

    temperature: float = 0.0
    max_tokens: int = DEFAULT_MAX_TOKENS
    top_p: float | None = None
    stop: tuple[str, ...] = ()

    def to_request(self) -> dict[str, Any]:
        """The OpenAI chat-completions parameters (unset ones left out)."""
        out: dict[str, Any] = {"temperature": self.temperature, "max_tokens": self.max_tokens}
        if self.top_p is not None:
            out["top_p"] = self.top_p
        if self.stop:
            out["stop"] = list(self.stop)
        return out


@dataclass(frozen=True)
class Expectations:
    """What a good answer looks like; every set field must hold (see pipeline.checks.expectations)."""

    json_schema: dict[str, Any] | None = None  # resolved schema (a `$file` reference is inlined); do not mutate
    json_schema_file: str | None = None  # the `$file` it came from, relative to the prompts dir
    json_fenced: str = "allow"  # allow | require | forbid a ```json fence around the JSON
    regex: str | None = None  # re.search on the stripped output
    max_chars: int | None = None  # len(stripped output) <= max_chars
    contains: tuple[str, ...] = ()  # case-insensitive substrings that must all appear
    not_contains: tuple[str, ...] = ()  # case-insensitive substrings that must not appear
    refuses: bool | None = None  # True: must decline; False: must not decline; None: not checked


@dataclass(frozen=True)
class PromptCase:
    id: str
    messages: tuple[Message, ...]
    expect: Expectations
    sampling: Sampling = field(default_factory=Sampling)
    critical: bool = False  # a critical case failing rejects the candidate on its own

    def messages_payload(self) -> list[dict[str, str]]:
        return [{"role": m.role, "content": m.content} for m in self.messages]


@dataclass(frozen=True)
class Suite:
    name: str
    cases: tuple[PromptCase, ...]
    file: str  # where it was loaded from (not part of the digest)
    description: str = ""

    def case(self, case_id: str) -> PromptCase:
        for case in self.cases:
            if case.id == case_id:
                return case
        raise KeyError(case_id)


@lru_cache(maxsize=1)
def suite_schema() -> dict[str, Any]:
    return json.loads(resources.files("pipeline.config").joinpath("schemas/suite.schema.json").read_text())


def load_suites(prompts_dir: str | Path) -> list[Suite]:
    """Every prompts_dir/*.yaml (not subdirectories), sorted by file name; suite names must be unique."""
    prompts_dir = Path(prompts_dir)
    if not prompts_dir.is_dir():
        raise ConfigError("prompts directory not found", file=str(prompts_dir))
    files = sorted(p for p in prompts_dir.iterdir() if p.suffix in SUITE_SUFFIXES and p.is_file())
    if not files:
        raise ConfigError("no prompt suites (*.yaml) found", file=str(prompts_dir))
    suites: list[Suite] = []
    seen: dict[str, str] = {}
    for path in files:
        suite = load_suite(path, prompts_dir=prompts_dir)
        if suite.name in seen:
            raise ConfigError(f"duplicate suite name {suite.name!r} (also in {seen[suite.name]})",
                              file=str(path), path="suite")
        seen[suite.name] = str(path)
        suites.append(suite)
    return suites


def load_suite(path: str | Path, prompts_dir: str | Path | None = None) -> Suite:
    """Load one suite file. `$file` references resolve against `prompts_dir` (default: the file's folder)."""
    path = Path(path)
    data = _read_yaml(path)
    _validate_shape(data, str(path))
    return _build(data, path, Path(prompts_dir) if prompts_dir is not None else path.parent)


def suite_digest(suite: Suite) -> str:
    """sha256 over what is sent and how it is judged: cases with defaults merged and `$file` schemas inlined.

    The description and the file's location are left out: editing them does not change any result.
    """
    content: dict[str, Any] = {"suite": suite.name, "cases": [asdict(c) for c in suite.cases]}
    for case in content["cases"]:
        case["expect"].pop("json_schema_file")  # the inlined schema is what counts, not its file name
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def suites_digest(suites: Iterable[Suite]) -> str:
    """One sha256 for a set of suites, independent of load order."""
    lines = sorted(f"{s.name}:{suite_digest(s)}" for s in suites)
    return hashlib.sha256("\n".join(lines).encode("utf-8")).hexdigest()


# --- reading and validating --------------------------------------------------------------------------


def _read_yaml(path: Path) -> Any:
    return load_yaml(path)


def _case_label(data: Any, index: int) -> str:
    """'cases[id=foo]' when case `index` has a usable id, else 'cases[3]'."""
    try:
        case_id = data["cases"][index]["id"]
    except (KeyError, IndexError, TypeError):
        case_id = None
    if isinstance(case_id, str) and re.fullmatch(r"[a-z0-9_.-]+", case_id):
        return f"cases[id={case_id}]"
    return f"cases[{index}]"


def _where(data: Any, parts: Iterable[Any]) -> str:
    """['cases', 3, 'expect', 'regex'] -> 'cases[id=foo].expect.regex'."""
    parts = list(parts)
    if len(parts) > 1 and parts[0] == "cases" and isinstance(parts[1], int):
        return format_path(parts[2:], root=_case_label(data, parts[1]))
    return format_path(parts, empty="(top level)")


def _describe(error: ValidationError) -> str:
    v = error.validator
    if v == "additionalProperties":
        extra = sorted(set(error.instance) - set(error.schema.get("properties", {})))
        allowed = ", ".join(sorted(error.schema.get("properties", {})))
        return f"unknown key {', '.join(map(repr, extra))} (allowed: {allowed})"
    if v == "required":
        return error.message.replace("is a required property", "is required")
    if v == "contains":
        return "needs at least one message with role 'user'"
    if v == "anyOf" and error.absolute_path and error.absolute_path[-1] == "expect":
        return "needs at least one expectation: json_schema, regex, max_chars, contains, not_contains or refuses"
    if v == "pattern" and error.absolute_path and error.absolute_path[-1] in ("id", "suite"):
        return f"{error.instance!r} must match [a-z0-9_.-]+"
    if v in ("minLength", "pattern") and error.absolute_path and error.absolute_path[-1] == "content":
        return "message content must be a non-empty string"
    if v == "minItems" and error.instance == []:
        return "must not be empty"
    message = error.message
    return message if len(message) <= 200 else message[:197] + "..."


def _validate_shape(data: Any, file: str) -> None:
    from jsonschema import Draft202012Validator

    if not isinstance(data, dict):
        raise ConfigError("a suite must be a mapping at the top level (suite, cases, ...)", file=file)
    # the shallowest error is usually the cause (an unknown key above a nested complaint); summary errors
    # ("no user message", "no expectation") come last so a wrong role or unknown key is named instead
    errors = sorted(Draft202012Validator(suite_schema()).iter_errors(data),
                    key=lambda e: (e.validator in ("contains", "anyOf"), len(e.absolute_path),
                                   list(map(str, e.absolute_path))))
    if errors:
        more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
        raise ConfigError(_describe(errors[0]) + more, file=file, path=_where(data, errors[0].absolute_path))


def _build(data: dict[str, Any], path: Path, prompts_dir: Path) -> Suite:
    file = str(path)
    defaults = data.get("defaults") or {}
    default_sampling = defaults.get("sampling") or {}
    default_fenced = defaults.get("json_fenced", "allow")
    cases: list[PromptCase] = []
    first_index: dict[str, int] = {}
    for index, raw in enumerate(data["cases"]):
        label = _case_label(data, index)
        if raw["id"] in first_index:
            raise ConfigError(f"duplicate case id {raw['id']!r} (first used by cases[{first_index[raw['id']]}])",
                              file=file, path=f"cases[{index}].id")
        first_index[raw["id"]] = index
        sampling = {**default_sampling, **(raw.get("sampling") or {})}
        if isinstance(sampling.get("stop"), str):
            sampling["stop"] = [sampling["stop"]]
        sampling["stop"] = tuple(sampling.get("stop", ()))
        cases.append(PromptCase(
            id=raw["id"],
            messages=tuple(Message(m["role"], m["content"]) for m in raw["messages"]),
            expect=_build_expect(raw["expect"], default_fenced, prompts_dir, file, f"{label}.expect"),
            sampling=Sampling(**sampling),
            critical=bool(raw.get("critical", False)),
        ))
    return Suite(name=data["suite"], cases=tuple(cases), file=file, description=data.get("description", ""))


def _build_expect(raw: dict[str, Any], default_fenced: str, prompts_dir: Path, file: str, where: str) -> Expectations:
    schema, schema_file = None, None
    if "json_schema" in raw:
        schema, schema_file = _resolve_schema(raw["json_schema"], prompts_dir, file, f"{where}.json_schema")
    elif "json_fenced" in raw:
        raise ConfigError("json_fenced only applies together with json_schema", file=file, path=f"{where}.json_fenced")
    if "regex" in raw:
        try:
            re.compile(raw["regex"])
        except re.error as exc:
            raise ConfigError(f"invalid regex {raw['regex']!r}: {exc}", file=file, path=f"{where}.regex") from exc
    return Expectations(
        json_schema=schema,
        json_schema_file=schema_file,
        json_fenced=raw.get("json_fenced", default_fenced),
        regex=raw.get("regex"),
        max_chars=raw.get("max_chars"),
        contains=tuple(raw.get("contains", ())),
        not_contains=tuple(raw.get("not_contains", ())),
        refuses=raw.get("refuses"),
    )


def _resolve_schema(value: dict[str, Any], prompts_dir: Path, file: str,
                    where: str) -> tuple[dict[str, Any], str | None]:
    """Inline schema, or {"$file": "schemas/x.json"} read from inside prompts_dir; checked with check_schema."""
    from jsonschema.exceptions import SchemaError
    from jsonschema.validators import Draft202012Validator, validator_for

    ref = value.get("$file")
    if ref is not None:
        if set(value) != {"$file"} or not isinstance(ref, str) or not ref:
            raise ConfigError('a schema reference is exactly {"$file": "<path relative to the prompts dir>"}',
                              file=file, path=where)
        root = prompts_dir.resolve()
        target = (root / ref).resolve()
        if not target.is_relative_to(root):
            raise ConfigError(f"$file {ref!r} points outside the prompts directory {root}", file=file, path=where)
        try:
            value = json.loads(target.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"$file {ref!r} not found (looked for {target})", file=file, path=where) from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ConfigError(f"$file {ref!r} is not readable JSON: {exc}", file=file, path=where) from exc
        if not isinstance(value, dict):
            raise ConfigError(f"$file {ref!r} must hold a JSON object (a JSON Schema)", file=file, path=where)
    try:
        validator_for(value, default=Draft202012Validator).check_schema(value)
    except SchemaError as exc:
        inner = format_path(exc.absolute_path, style="pointer", empty="(root)")
        source = f" in $file {ref!r}" if ref else ""
        raise ConfigError(f"invalid JSON Schema{source} at {inner}: {' '.join(exc.message.split())[:200]}",
                          file=file, path=where) from exc
    return value, ref
