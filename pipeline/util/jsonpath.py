"""The one formatter for a location inside a JSON/YAML document (a jsonschema error's `absolute_path`, a
duplicate YAML key), in the three spellings modelgate's messages use:

- "dotted" (config messages): ['serving', 'extra_args', 2] -> 'serving.extra_args[2]'
- "jsonpath" (a model's output judged against a schema): ['items', 0, 'odd key'] -> '$.items[0]["odd key"]'
- "pointer" (a location inside a JSON Schema document): ['properties', 'x'] -> 'properties/x'
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Literal

PathStyle = Literal["dotted", "jsonpath", "pointer"]
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def format_path(parts: Iterable[str | int], *, style: PathStyle = "dotted", root: str = "", empty: str = "") -> str:
    """`parts` spelled in `style`, appended to `root` (a prefix already spelled, e.g. 'cases[id=foo]');
    `empty` when the result would be empty (the document itself). "jsonpath" is rooted at '$' and quotes a
    key that is not an identifier."""
    if style == "pointer":
        out = "/".join(map(str, parts))
    else:
        out = "$" if style == "jsonpath" else root
        for part in parts:
            if isinstance(part, int):
                out += f"[{part}]"
            elif style == "jsonpath" and not _IDENTIFIER.fullmatch(str(part)):
                out += f"[{json.dumps(str(part))}]"
            else:
                out += f".{part}" if out else str(part)
    return out or empty


def json_path(parts: Iterable[str | int]) -> str:
    """deque(['items', 0, 'qty']) -> '$.items[0].qty'."""
    return format_path(parts, style="jsonpath")
