"""The words release.yaml's typed sections are written in (config/release.py, serving.py, gates.py, document.py).

Every section is a frozen dataclass whose fields carry their type, constraints, default and help text once:

    max_model_len: Annotated[int, Field(ge=16, description="the server's context length")] = 2048

pydantic reads them to generate the JSON Schema (`python -m pipeline.config.schema`) and to build the typed
section from validated YAML; code that constructs a section itself gets a plain dataclass (no validation).
A number keeps the spelling YAML gave it (`levels: [1, 3]` stays `(1, 3)`, not `(1.0, 3.0)`): reports, labels and
digests show the values as written.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import ConfigDict, Field, ValidatorFunctionWrapHandler, WrapValidator
from pydantic.json_schema import SkipJsonSchema

SECTION = ConfigDict(extra="forbid")  # every section: an unknown key is an error


def _as_written(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
    checked = handler(value)
    return value if type(value) is int else checked


AS_WRITTEN = WrapValidator(_as_written)

Number = Annotated[float, AS_WRITTEN]
Positive = Annotated[float, Field(gt=0), AS_WRITTEN]
NonNegative = Annotated[float, Field(ge=0), AS_WRITTEN]
Fraction = Annotated[float, Field(ge=0, le=1), AS_WRITTEN]
Count = Annotated[int, Field(ge=1)]
Text = Annotated[str, Field(min_length=1)]
EnvName = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]
HttpUrl = Annotated[str, Field(pattern=r"^https?://")]

# `x: T | Absent = None`: x may be left out (None), but not written as null
Absent = SkipJsonSchema[None]
# a list whose items must differ
UNIQUE = Field(json_schema_extra={"uniqueItems": True})


def doc(text: str, **constraints: Any) -> Any:
    """A field's help text (and constraints): `Annotated[int, doc("...", ge=1)]`."""
    return Field(description=text, **constraints)
