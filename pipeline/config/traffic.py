"""Recorded production traffic (gates.replay.path): load, validate, deduplicate and sample it.

One JSONL file, or a directory of *.jsonl files (read in name order). Each line is one recorded request:

    {"id": "optional", "tags": {"intent": "orders"},
     "request": {<an OpenAI chat-completion request body: messages, response_format, tools, tool_choice,
                 max_tokens, temperature, stop, ...>},
     "response": {<optional: the chat completion production answered, with its "model" (the served name)>}}

or the bare request body, or a line of an OpenAI Batch API input file:

    {"custom_id": "req-1", "method": "POST", "url": "/v1/chat/completions", "body": {<the request body>}}

whose answer, when `gates.replay.batch_output` names the batch's output file (or a directory of them), is the
output line with the same custom_id (`response.body`, a chat completion, when `response.status_code` is 200).
A malformed line (not JSON, an unknown role, a response_format or tool whose schema
is not a JSON Schema, ...) is bad input naming the file and the line; with `skip_invalid` it is counted and
shown instead. A file without any request is bad input. The raw requests stay in memory on the runner: only
scrubbed excerpts (util/pii.py) are stored or shown.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.errors import BadInput
from pipeline.util.pii import scrub

ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
# request fields replayed as recorded; the rest of a body (model, stream, user, metadata, n, ...) is not sent
REPLAYED_PARAMS = ("response_format", "tools", "tool_choice", "parallel_tool_calls", "max_tokens",
                   "max_completion_tokens", "temperature", "top_p", "stop", "seed", "presence_penalty",
                   "frequency_penalty")
RESPONSE_FORMATS = frozenset({"text", "json_object", "json_schema"})


@dataclass(frozen=True)
class Answer:
    """One model's answer to a replayed request (recorded or asked in this gate)."""

    text: str
    tool_calls: tuple[tuple[str, str], ...] = ()  # (function name, arguments as sent: a JSON string)
    finish_reason: str | None = None
    error: str | None = None
    served_name: str | None = None

    @property
    def size(self) -> int:
        """Output length in characters: the text and every tool call's name and arguments."""
        return len(self.text) + sum(len(n) + len(a) for n, a in self.tool_calls)


@dataclass(frozen=True)
class Recorded:
    """One recorded request: where it came from, what to send, what production answered (if recorded)."""

    key: str  # content hash of messages + params: the pairing key, stable across files
    source: str  # "file.jsonl:12"
    messages: tuple[dict[str, Any], ...]
    params: dict[str, Any]
    tags: dict[str, str] = field(default_factory=dict)
    response: Answer | None = None

    def body(self) -> dict[str, Any]:
        return {"messages": list(self.messages), **self.params}

    def excerpt(self, chars: int = 300) -> str:
        """The last user message, scrubbed and cut."""
        users = [m for m in self.messages if m.get("role") == "user"]
        content = users[-1].get("content") if users else ""
        text = content if isinstance(content, str) else json.dumps(content)
        return scrub(text)[:chars]


@dataclass(frozen=True)
class Invalid:
    source: str
    problem: str  # scrubbed: the problem may quote the line


@dataclass(frozen=True)
class Traffic:
    records: list[Recorded]
    invalid: list[Invalid]
    lines: int  # non-blank lines read
    duplicates: int  # records dropped as duplicates of an earlier one


class _Bad(Exception):
    def __init__(self, path: str, message: str):
        super().__init__(message)
        self.path = path


def traffic_files(path: Path, *, file: str, where: str) -> list[Path]:
    if path.is_file():
        return [path]
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix == ".jsonl" and p.is_file())
        if files:
            return files
        raise BadInput(f"no *.jsonl files in {path}", file=file, path=where)
    raise BadInput(f"replay traffic not found: {path}", file=file, path=where)


def load_batch_outputs(path: Path, *, file: str = "release.yaml",
                       where: str = "gates.replay.batch_output") -> dict[str, Any]:
    """custom_id -> the chat completion an OpenAI Batch API output file holds for it (status 200, no error);
    a line that is not an output line is bad input naming its file and line."""
    out: dict[str, Any] = {}
    for fpath in traffic_files(path, file=file, where=where):
        try:
            text = fpath.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise BadInput(f"cannot read a batch output file: {exc}", file=str(fpath)) from exc
        for lineno, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                data = json.loads(line)
                custom_id, response = str(data["custom_id"]), data.get("response")
            except (json.JSONDecodeError, KeyError, TypeError):
                raise BadInput("not a batch output line (JSON with custom_id, response, error)", file=str(fpath),
                               path=f"line {lineno}") from None
            if isinstance(response, dict) and response.get("status_code") == 200 and not data.get("error"):
                out[custom_id] = response.get("body")
    return out


def load_traffic(path: Path, *, skip_invalid: bool = False, file: str = "release.yaml",
                 where: str = "gates.replay.path", batch_output: Path | None = None) -> Traffic:
    """Every recorded request under `path`, duplicates removed (the first occurrence kept); a batch input line's
    answer comes from `batch_output` (load_batch_outputs)."""
    outputs = load_batch_outputs(batch_output, file=file) if batch_output is not None else {}

    def lines() -> Iterator[Line]:
        for fpath in traffic_files(path, file=file, where=where):
            try:
                text = fpath.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise BadInput(f"cannot read replay traffic: {exc}", file=str(fpath)) from exc
            numbered = [(n, ln) for n, ln in enumerate(text.splitlines(), 1) if ln.strip()]
            if not numbered:
                raise BadInput("empty replay traffic file: no recorded requests", file=str(fpath))
            for lineno, line in numbered:
                yield Line(line, f"{fpath.name}:{lineno}", str(fpath), f"line {lineno}")

    return collect(lines(), skip_invalid=skip_invalid, outputs=outputs, what=str(path), file=file, where=where)


@dataclass(frozen=True)
class Line:
    """One recorded request as text, where it came from (shown), and where a problem with it is (bad input)."""

    text: str
    source: str  # "file.jsonl:12", "trace tr-..."
    file: str
    path: str


def collect(lines: Iterable[Line], *, skip_invalid: bool, outputs: dict[str, Any] | None = None,
            what: str, file: str, where: str) -> Traffic:
    """Parse each line; duplicates dropped (the first kept); a malformed one is bad input naming its file and
    path, or counted with `skip_invalid`; nothing valid at all is bad input naming `where`."""
    records: list[Recorded] = []
    invalid: list[Invalid] = []
    seen: set[str] = set()
    count = duplicates = 0
    for line in lines:
        count += 1
        try:
            rec = parse_line(line.text, line.source, outputs)
        except _Bad as bad:
            if not skip_invalid:
                raise BadInput(scrub(str(bad)), file=line.file,
                               path=line.path + (f" {bad.path}" if bad.path else "")) from None
            invalid.append(Invalid(line.source, scrub(f"{bad.path}: {bad}" if bad.path else str(bad))))
            continue
        if rec.key in seen:
            duplicates += 1
            continue
        seen.add(rec.key)
        records.append(rec)
    if not records:
        raise BadInput(f"no valid recorded request in {what} ({len(invalid)} invalid line(s))", file=file,
                       path=where)
    return Traffic(records, invalid, count, duplicates)


def parse_line(line: str, source: str, batch_outputs: dict[str, Any] | None = None) -> Recorded:
    try:
        data = json.loads(line)
    except json.JSONDecodeError as exc:
        raise _Bad("", f"not JSON: {exc.msg} at column {exc.colno}") from None
    if not isinstance(data, dict):
        raise _Bad("", f"a record must be a JSON object, got {type(data).__name__}")
    batch = "custom_id" in data and "body" in data  # an OpenAI Batch API input line
    if batch:
        data = _batch_record(data, batch_outputs or {})
    if "request" in data:
        body, prefix = data["request"], "body" if batch else "request"
        unknown = set(data) - {"id", "tags", "request", "response"}
        if unknown:
            raise _Bad("", f"unknown key(s) {', '.join(sorted(map(repr, unknown)))} (allowed: id, tags, request, "
                       "response)")
    else:
        body, prefix = data, ""
    if not isinstance(body, dict):
        raise _Bad(prefix, "must be a chat-completion request object")

    def at(path: str) -> str:
        return f"{prefix}.{path}" if prefix else path

    messages = check_messages(body.get("messages"), at)
    params = {k: body[k] for k in REPLAYED_PARAMS if k in body and body[k] is not None}
    check_params(params, at)
    tags = data.get("tags") if "request" in data else None
    if tags is not None and not (isinstance(tags, dict) and all(isinstance(v, (str, int, float, bool))
                                                                for v in tags.values())):
        raise _Bad("tags", "must be an object of strings")
    response = parse_response(data["response"]) if "request" in data and data.get("response") is not None else None
    key = hashlib.sha256(json.dumps({"messages": messages, **params}, sort_keys=True).encode()).hexdigest()[:16]
    return Recorded(key, source, tuple(messages), params, {k: str(v) for k, v in (tags or {}).items()}, response)


def _batch_record(data: dict[str, Any], outputs: dict[str, Any]) -> dict[str, Any]:
    """A batch input line as a record: its body is the request, its output line's body (if any) the response."""
    unknown = set(data) - {"custom_id", "method", "url", "body"}
    if unknown:
        raise _Bad("", f"unknown key(s) {', '.join(sorted(map(repr, unknown)))} in a batch input line (allowed: "
                       "custom_id, method, url, body)")
    if data.get("url") != "/v1/chat/completions" or str(data.get("method", "POST")).upper() != "POST":
        raise _Bad("url", f"only POST /v1/chat/completions batch requests are replayed, not {data.get('method')} "
                          f"{data.get('url')}")
    response = outputs.get(str(data["custom_id"]))
    return {"id": str(data["custom_id"]), "request": data["body"],
            **({"response": response} if response is not None else {})}


def check_messages(messages: Any, at: Any) -> list[dict[str, Any]]:
    if not isinstance(messages, list) or not messages:
        raise _Bad(at("messages"), "must be a non-empty list of messages")
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise _Bad(at(f"messages[{i}]"), "must be an object with a role")
        role = m.get("role")
        if role not in ROLES:
            raise _Bad(at(f"messages[{i}].role"), f"unknown role {role!r} (known: {', '.join(sorted(ROLES))})")
        content = m.get("content")
        if content is not None and not isinstance(content, (str, list)):
            raise _Bad(at(f"messages[{i}].content"), "must be a string, a list of parts or null")
        if content is None and role in ("system", "user", "developer"):
            raise _Bad(at(f"messages[{i}].content"), f"a {role} message needs content")
    return messages


def _check_schema(schema: Any, path: str) -> None:
    from jsonschema.exceptions import SchemaError
    from jsonschema.validators import validator_for

    if not isinstance(schema, (dict, bool)):
        raise _Bad(path, "is not a JSON Schema (must be an object)")
    try:
        validator_for(schema).check_schema(schema)
    except SchemaError as exc:
        inner = "/".join(map(str, exc.absolute_path))
        raise _Bad(path, f"is not a valid JSON Schema{f' at {inner}' if inner else ''}: {exc.message}") from None


def check_params(params: dict[str, Any], at: Any) -> None:
    fmt = params.get("response_format")
    if fmt is not None:
        kind = fmt.get("type") if isinstance(fmt, dict) else None
        if kind not in RESPONSE_FORMATS:
            raise _Bad(at("response_format.type"), f"must be one of {', '.join(sorted(RESPONSE_FORMATS))}, "
                       f"got {kind!r}")
        if kind == "json_schema":
            spec = fmt.get("json_schema")
            if not isinstance(spec, dict) or "schema" not in spec:
                raise _Bad(at("response_format.json_schema"), "must be an object with a schema")
            _check_schema(spec["schema"], at("response_format.json_schema.schema"))
    tools = params.get("tools")
    if tools is not None:
        if not isinstance(tools, list):
            raise _Bad(at("tools"), "must be a list of tools")
        for i, tool in enumerate(tools):
            fn = tool.get("function") if isinstance(tool, dict) else None
            if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not fn["name"]:
                raise _Bad(at(f"tools[{i}].function"), "must be an object with a name")
            if "parameters" in fn:
                _check_schema(fn["parameters"], at(f"tools[{i}].function.parameters"))
    choice = params.get("tool_choice")
    if choice is not None and not (choice in ("none", "auto", "required") or (
            isinstance(choice, dict) and isinstance((choice.get("function") or {}).get("name"), str))):
        raise _Bad(at("tool_choice"), f"must be none, auto, required or a named function, got {choice!r}")
    if isinstance(choice, dict) and choice["function"]["name"] not in declared_tools(params):
        raise _Bad(at("tool_choice.function.name"), f"names no declared tool: {choice['function']['name']!r}")
    stop = params.get("stop")
    if stop is not None and not (isinstance(stop, str) or (isinstance(stop, list)
                                                           and all(isinstance(s, str) for s in stop))):
        raise _Bad(at("stop"), "must be a string or a list of strings")
    for name in ("max_tokens", "max_completion_tokens"):
        if name in params and not (isinstance(params[name], int) and params[name] > 0):
            raise _Bad(at(name), f"must be a positive integer, got {params[name]!r}")


def declared_tools(params: dict[str, Any]) -> dict[str, Any]:
    """Tool name -> its parameters schema (an empty one when it declares none)."""
    return {t["function"]["name"]: t["function"].get("parameters", {}) for t in params.get("tools") or []}


def parse_response(resp: Any) -> Answer:
    """Production's recorded chat completion -> Answer (its "model" is the served name that produced it)."""
    try:
        choice = resp["choices"][0]
        message = choice.get("message") or {}
        calls = tuple((str(c["function"]["name"]), str(c["function"].get("arguments") or ""))
                      for c in message.get("tool_calls") or [])
        return Answer(text=str(message.get("content") or ""), tool_calls=calls,
                      finish_reason=choice.get("finish_reason"), served_name=resp.get("model"))
    except (KeyError, IndexError, TypeError, AttributeError):
        raise _Bad("response", "must be a chat completion (choices[0].message)") from None


def sample(records: list[Recorded], size: int | None, seed: int, strata: str | None = None) -> list[Recorded]:
    """`size` records, the same for the same records and seed; with `strata`, each value of that tag gets its
    proportional share (largest remainders, at least one each while there is room). Kept in file order."""
    if size is None or size >= len(records):
        return list(records)
    rng = random.Random(seed)
    if not strata:
        chosen = set(rng.sample(range(len(records)), size))
    else:
        groups: dict[str, list[int]] = {}
        for i, rec in enumerate(records):
            groups.setdefault(rec.tags.get(strata, ""), []).append(i)
        names = sorted(groups)
        quota = {g: size * len(groups[g]) / len(records) for g in names}
        share = {g: min(len(groups[g]), max(1 if size >= len(names) else 0, int(quota[g]))) for g in names}
        for g in sorted(names, key=lambda g: (-(quota[g] - int(quota[g])), g)):
            if sum(share.values()) >= size:
                break
            share[g] = min(len(groups[g]), share[g] + 1)
        while sum(share.values()) < size:  # small groups were capped at their size: the room is elsewhere
            roomy = max((g for g in names if share[g] < len(groups[g])), key=lambda g: (quota[g] - share[g], g))
            share[roomy] += 1
        while sum(share.values()) > size:  # the minimum of one each overshot: trim the largest
            biggest = max(names, key=lambda g: (share[g], g))
            share[biggest] -= 1
        chosen = {i for g in names for i in rng.sample(groups[g], share[g])}
    return [rec for i, rec in enumerate(records) if i in chosen]
