"""Check a request against GitHub's published OpenAPI description (@octokit/openapi, installed by
scripts/setup.sh): the path+method must be an operation of the description, path and query parameters must
match their schemas (unknown query parameters are errors), and a JSON body must validate against the
operation's requestBody schema. A focused validator: `$ref`s are resolved only for the operation at hand,
and OpenAPI 3.0's `nullable` is turned into JSON Schema before `jsonschema` sees it.

Loading the 13 MB description and building the route table takes ~0.2 s; it happens once per process.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema

from tests.support.paths import REPO

SPEC_DIR = REPO / ".tools/node_modules/@octokit/openapi/generated"
DOTCOM = "api.github.com.json"
GHES = "ghes-3.19.json"


class Violation(Exception):
    """The request is not one GitHub's OpenAPI description allows. ``status``: what GitHub would answer."""

    def __init__(self, message: str, status: int = 422):
        self.status = status
        super().__init__(message)


@dataclass(frozen=True)
class Operation:
    id: str
    template: str
    method: str
    path_params: dict[str, str]
    spec: Spec

    def example(self, status: str = "200") -> Any:
        """The description's own example response (a copy), completed with every property of the response
        schema it leaves out (examples are not exhaustive; GitHub sends them all, null when nullable)."""
        key = (self.template, self.method, status)
        if key not in self.spec.examples:
            op = self.spec.paths[self.template][self.method]
            content = self.spec.resolve(op["responses"][status])["content"]["application/json"]
            example = self.spec.resolve(next(iter(content["examples"].values())))
            value = _complete(json.loads(json.dumps(example["value"])), self.spec.schema(content["schema"]))
            self.spec.examples[key] = json.dumps(value)
        return json.loads(self.spec.examples[key])


class Spec:
    def __init__(self, path: Path):
        self.name = path.name
        self.doc = json.loads(path.read_text(encoding="utf-8"))
        self.paths = self.doc["paths"]
        self.examples: dict[tuple[str, str, str], str] = {}
        routes = []
        for template in self.paths:
            pattern = re.sub(r"\\{(\w+)\\}", r"(?P<\1>[^/]+)", re.escape(template))
            literal = len(re.sub(r"\{\w+\}", "", template))
            routes.append((literal, template, re.compile(f"^{pattern}$")))
        routes.sort(key=lambda r: -r[0])  # the most literal template wins: /issues/comments over /issues/{n}
        self.routes = [(t, rx) for _, t, rx in routes]

    def resolve(self, node: Any) -> Any:
        while isinstance(node, dict) and "$ref" in node:
            node = self._pointer(node["$ref"])
        return node

    def _pointer(self, ref: str) -> Any:
        node = self.doc
        for part in ref.removeprefix("#/").split("/"):
            node = node[part.replace("~1", "/").replace("~0", "~")]
        return node

    def schema(self, node: Any, stack: tuple[str, ...] = ()) -> Any:
        """`node` as plain JSON Schema: refs inlined (a recursive one becomes {}), `nullable` as a null type."""
        if isinstance(node, list):
            return [self.schema(n, stack) for n in node]
        if not isinstance(node, dict):
            return node
        if "$ref" in node:
            ref = node["$ref"]
            return {} if ref in stack else self.schema(self._pointer(ref), stack + (ref,))
        out = {k: self.schema(v, stack) for k, v in node.items()
               if not k.startswith("x-") and k not in ("example", "examples", "description", "nullable")}
        if node.get("nullable"):
            if isinstance(out.get("type"), str):
                out["type"] = [out["type"], "null"]
            if "enum" in out:
                out["enum"] = [*out["enum"], None]
            for key in ("oneOf", "anyOf"):
                if key in out:
                    out[key] = [*out[key], {"type": "null"}]
        return out

    def match(self, method: str, path: str) -> Operation:
        method = method.lower()
        for template, rx in self.routes:
            m = rx.match(path)
            if m and method in self.paths[template]:
                op = self.paths[template][method]
                return Operation(op["operationId"], template, method, m.groupdict(), self)
        allowed = [t for t, rx in self.routes if rx.match(path)]
        if allowed:
            raise Violation(f"{method.upper()} {path}: {allowed[0]} has no {method.upper()} operation "
                            f"in {self.name}", 404)
        raise Violation(f"{method.upper()} {path}: no such path in {self.name}", 404)

    def validate(self, method: str, path: str, query: dict[str, list[str]], body: bytes | None,
                 content_type: str = "") -> tuple[Operation, Any]:
        """The operation and the decoded JSON body; raises Violation."""
        op = self.match(method, path)
        raw = self.paths[op.template]
        where = f"{method.upper()} {op.template} ({op.id})"
        params = {}
        for p in [*raw.get("parameters", []), *raw[op.method].get("parameters", [])]:
            p = self.resolve(p)
            params[(p["in"], p["name"])] = p
        for name, value in op.path_params.items():
            self._check_param(where, params.get(("path", name)), "path", name, [value])
        for name, values in query.items():
            if ("query", name) not in params:
                raise Violation(f"{where}: unknown query parameter {name!r}")
            self._check_param(where, params[("query", name)], "query", name, values)
        for (kind, name), p in params.items():
            if kind == "query" and p.get("required") and name not in query:
                raise Violation(f"{where}: required query parameter {name!r} is missing")
        return op, self._check_body(where, self.resolve(raw[op.method].get("requestBody")), body, content_type)

    def _check_param(self, where, param, kind, name, values):
        if param is None:
            raise Violation(f"{where}: {kind} parameter {name!r} is not in the description")
        schema = self.schema(param.get("schema", {}))
        if len(values) > 1 and schema.get("type") != "array":
            raise Violation(f"{where}: {kind} parameter {name!r} given {len(values)} times")
        value = _coerce(values[0], schema)
        try:
            jsonschema.Draft7Validator(schema).validate(value)
        except jsonschema.ValidationError as exc:
            raise Violation(f"{where}: {kind} parameter {name}={values[0]!r}: {exc.message}") from None

    def _check_body(self, where, request_body, body, content_type):
        empty = not body or not body.strip() or body.strip() == b"null"
        if request_body is None:
            if not empty:
                raise Violation(f"{where}: takes no request body")
            return None
        if empty:
            if request_body.get("required"):
                raise Violation(f"{where}: the request body is required")
            return None
        if "application/json" not in content_type:
            raise Violation(f"{where}: Content-Type {content_type!r} is not application/json", 415)
        try:
            data = json.loads(body)
        except ValueError:
            raise Violation(f"{where}: Problems parsing JSON", 400) from None
        schema = self.schema(request_body["content"]["application/json"]["schema"])
        errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(data), key=lambda e: list(e.path))
        if errors:
            first = errors[0]
            at = ".".join(str(p) for p in first.absolute_path) or "(body)"
            raise Violation(f"{where}: request body {at}: {first.message}")
        return data


def _coerce(text: str, schema: dict) -> Any:
    types = schema.get("type")
    types = types if isinstance(types, list) else [types]
    if "integer" in types and re.fullmatch(r"-?\d+", text):
        return int(text)
    if "number" in types and re.fullmatch(r"-?\d+(\.\d+)?", text):
        return float(text)
    if "boolean" in types and text in ("true", "false"):
        return text == "true"
    return text


def _complete(value: Any, schema: dict, depth: int = 0) -> Any:
    if depth > 4 or not isinstance(schema, dict):
        return value
    schema = next(iter(schema.get("allOf", []) or schema.get("oneOf", []) or schema.get("anyOf", [])), schema) \
        if "properties" not in schema and "items" not in schema else schema
    if isinstance(value, dict):
        for key, sub in schema.get("properties", {}).items():
            if key in value:
                value[key] = _complete(value[key], sub, depth + 1)
            else:
                value[key] = _zero(sub, depth + 1)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        value[:] = [_complete(v, schema["items"], depth + 1) for v in value]
    return value


def _zero(schema: dict, depth: int) -> Any:
    types = schema.get("type")
    types = types if isinstance(types, list) else [types]
    if "null" in types or depth > 4:
        return None
    if "object" in types or "properties" in schema:
        return _complete({}, schema, depth)
    return {"string": "", "integer": 0, "number": 0, "boolean": False, "array": []}.get(types[0])


@functools.cache
def load(name: str = DOTCOM) -> Spec:
    """The description `name` from @octokit/openapi, loaded once per process."""
    path = SPEC_DIR / name
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: run scripts/setup.sh (it installs @octokit/openapi)")
    return Spec(path)
