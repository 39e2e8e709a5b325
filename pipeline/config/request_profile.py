"""How production's clients call the model, so that every chat request the gate sends looks the same.

`serving.request_profile` in release.yaml says, per sampling parameter, who decides it in production:

    request_profile:
      set: {temperature: 0.2}              # production's clients always send these values
      server_default: [top_p, top_k]       # production's clients never send these: the server decides

A parameter that production leaves to the server is left out of every request the gate sends, even where a
prompt case sets it: the server then applies its defaults (vLLM: the candidate's generation_config.json),
exactly as it will for production's clients, so a candidate that ships a changed default is judged by it.
A parameter in `set` is sent with that value where a case does not set its own (a case is one kind of
production request and may set its own value). Without a profile the requests are what the suites' cases
set (the default). The profile is part of what the format gate measured: a changed profile re-evaluates
the production baseline instead of pairing with results obtained under other request parameters.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import ConfigDict, Field, with_config
from typing_extensions import TypedDict

from pipeline.config.fields import AS_WRITTEN, SECTION, UNIQUE, Fraction, NonNegative, Number, Positive, Text, doc
from pipeline.errors import ConfigError


def _names_enumerated(schema: dict[str, Any]) -> None:
    """An unknown parameter reads "'temprature' is not one of [the names]" rather than "unknown key"."""
    schema.pop("additionalProperties", None)
    schema["propertyNames"] = {"enum": list(schema["properties"])}


@with_config(ConfigDict(extra="forbid", json_schema_extra=_names_enumerated))
class SamplingParams(TypedDict, total=False):
    """`serving.request_profile.set`: the chat-completions sampling parameters production's clients send."""

    temperature: Annotated[NonNegative, doc("sampling temperature")]
    top_p: Annotated[float, Field(gt=0, le=1), AS_WRITTEN, doc("nucleus sampling: the probability mass kept")]
    top_k: Annotated[int, doc("sample among the k most likely tokens")]
    min_p: Annotated[Fraction, doc("drop tokens below this fraction of the most likely token's probability")]
    max_tokens: Annotated[int, doc("output tokens at most", ge=1)]
    presence_penalty: Annotated[Number, doc("penalty on tokens already present")]
    frequency_penalty: Annotated[Number, doc("penalty growing with a token's count so far")]
    repetition_penalty: Annotated[Positive, doc("vLLM's multiplicative repetition penalty")]
    seed: Annotated[int, doc("sampling seed")]
    stop: Annotated[list[Text], doc("stop strings")]


# the parameters a profile may name, in the order the schema lists them
SAMPLING_PARAMS: tuple[str, ...] = tuple(SamplingParams.__annotations__)
if TYPE_CHECKING:
    SamplingParam = str
else:
    SamplingParam = Literal[SAMPLING_PARAMS]


@dataclass(frozen=True)
class RequestProfile:
    __pydantic_config__ = SECTION

    set: Annotated[SamplingParams, doc("values production's clients always send (sent where a case sets none)")] \
        = field(default_factory=lambda: SamplingParams())
    server_default: Annotated[tuple[SamplingParam, ...], UNIQUE, doc(
        "parameters production's clients never send: the server's defaults apply (never sent, even where a case "
        "sets them)")] = ()

    @property
    def configured(self) -> bool:
        return bool(self.set or self.server_default)

    def apply(self, params: dict[str, Any]) -> dict[str, Any]:
        """A case's request parameters as production would send them."""
        out = {k: v for k, v in params.items() if k not in self.server_default}
        for name, value in self.set.items():
            out.setdefault(name, value)
        return out

    def digest(self) -> str:
        canonical = json.dumps({"set": self.set, "server_default": sorted(self.server_default)},
                               sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()

    def to_dict(self) -> dict[str, Any]:
        return {"set": dict(self.set), "server_default": list(self.server_default)}


def check_profile(profile: RequestProfile, *, file: str) -> None:
    """A parameter both set and left to the server is a ConfigError naming it."""
    both = sorted(set(profile.set) & set(profile.server_default))
    if both:
        raise ConfigError(f"{', '.join(both)} cannot be both set by the clients and left to the server's default",
                          file=file, path=f"serving.request_profile.set.{both[0]}")
