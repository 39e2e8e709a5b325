"""The generated files: release.yaml's JSON Schema and its configuration reference, both from `ReleaseFile`.

    python -m pipeline.config.schema            # writes pipeline/config/schemas/release.schema.json and
                                                #   docs/configuration.md
    python -m pipeline.config.schema --check    # exit 1 when a checked-in file differs from what it generates

The schema is what release.yaml is validated against (config/release.py), so its error messages and paths are
the model's. The generator keeps the schema in the plain shape those messages were written for: no titles,
`enum`/`const` without a type, `type: [X, "null"]` for a nullable field, `propertyNames` for a map's keys.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue
from pydantic_core import core_schema

from pipeline.config.document import ReleaseFile
from pipeline.config.reference import render

PACKAGE = Path(__file__).resolve().parent
SCHEMA_FILE = PACKAGE / "schemas" / "release.schema.json"
REFERENCE_FILE = PACKAGE.parents[1] / "docs" / "configuration.md"
SCHEMA_ID = "https://modelgate.dev/schemas/release.schema.json"


class _PlainSchema(GenerateJsonSchema):
    def field_title_should_be_set(self, schema: Any) -> bool:
        return False

    def literal_schema(self, schema: core_schema.LiteralSchema) -> JsonSchemaValue:
        out = super().literal_schema(schema)
        out.pop("type", None)  # `'x' is not one of [...]`, the one complaint about a choice
        return out

    def nullable_schema(self, schema: core_schema.NullableSchema) -> JsonSchemaValue:
        inner = self.generate_inner(schema["schema"])
        if isinstance(inner.get("type"), str):
            return {**inner, "type": [inner["type"], "null"]}
        return super().nullable_schema(schema)

    def dict_schema(self, schema: core_schema.DictSchema) -> JsonSchemaValue:
        out = super().dict_schema(schema)
        patterns = out.pop("patternProperties", None)
        if patterns:  # every key must match (pydantic's patternProperties would let others through)
            ((pattern, values),) = patterns.items()
            out["propertyNames"] = {"pattern": pattern}
            out["additionalProperties"] = values
        return out

    def default_schema(self, schema: core_schema.WithDefaultSchema) -> JsonSchemaValue:
        out = super().default_schema(schema)
        if out.get("default") is None or isinstance(out.get("default"), dict):
            out.pop("default", None)  # absent means None; a section's defaults are its fields'
        return out


def _untitled(node: Any, *, names: bool = False) -> Any:
    """`node` without pydantic's titles; `names`: node maps names to schemas (properties, $defs)."""
    if isinstance(node, list):
        return [_untitled(item) for item in node]
    if not isinstance(node, dict):
        return node
    if names:
        return {name: _untitled(child) for name, child in node.items()}
    return {key: value if key in ("default", "const", "enum") else " ".join(value.split()) if key == "description"
            else _untitled(value, names=key in _NAME_MAPS) for key, value in node.items() if key != "title"}


_NAME_MAPS = ("properties", "$defs")


def release_json_schema() -> dict[str, Any]:
    """The JSON Schema of release.yaml, as checked in."""
    generated = TypeAdapter(ReleaseFile).json_schema(schema_generator=_PlainSchema)
    schema = _untitled(generated)
    defs = schema.pop("$defs")
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": SCHEMA_ID,
            "title": "modelgate release.yaml", **schema, "$defs": defs}


def schema_text() -> str:
    return json.dumps(release_json_schema(), indent=2, ensure_ascii=False) + "\n"


def reference_text() -> str:
    return render(release_json_schema())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.config.schema", description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when a checked-in file is stale")
    args = parser.parse_args(argv)
    stale = []
    for path, text in ((SCHEMA_FILE, schema_text()), (REFERENCE_FILE, reference_text())):
        if path.exists() and path.read_text(encoding="utf-8") == text:
            continue
        if args.check:
            stale.append(path)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path}")
    for path in stale:
        print(f"{path} is stale: run python -m pipeline.config.schema", file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
