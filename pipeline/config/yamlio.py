"""Reading the YAML inputs (release.yaml, prompt suites): one loader, one error format.

A repeated key is an error naming its path (PyYAML would silently keep the last one); syntax errors name the
line and column.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.errors import ConfigError
from pipeline.util.jsonpath import format_path

if TYPE_CHECKING:
    import yaml


def _duplicate(node: yaml.Node, parts: list[str | int],
               seen: set[int]) -> tuple[list[str | int], yaml.Node, yaml.Node] | None:
    """The first repeated mapping key under `node`: (path parts, key node, first key node), else None."""
    import yaml

    if id(node) in seen:
        return None
    seen.add(id(node))
    if isinstance(node, yaml.MappingNode):
        first: dict = {}
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
            if key is not None and key != "<<":
                if key in first:
                    return [*parts, key], key_node, first[key]
                first[key] = key_node
            found = _duplicate(value_node, [*parts, key if key is not None else "?"], seen)
            if found:
                return found
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            found = _duplicate(item, [*parts, i], seen)
            if found:
                return found
    return None


def load_yaml(path: Path) -> Any:
    """Parse a YAML file safely. A repeated key is a ConfigError naming its full path (`serving.dtype`)."""
    import yaml

    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError("file not found", file=str(path)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read: {exc}", file=str(path)) from exc
    try:
        loader = yaml.SafeLoader(text)
        try:
            node = loader.get_single_node()
            if node is None:
                return None
            found = _duplicate(node, [], set())
            if found:
                parts, key_node, first = found
                raise ConfigError(f"line {key_node.start_mark.line + 1}: duplicate key {parts[-1]!r} (first on line "
                                  f"{first.start_mark.line + 1}; YAML would silently keep only the last one)",
                                  file=str(path), path=format_path(parts))
            return loader.construct_document(node)
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{where}invalid YAML: {' '.join(str(problem).split())}", file=str(path)) from exc
