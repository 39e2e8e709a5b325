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
from typing import Any

# the chat-completions sampling parameters a profile may name (the JSON Schema enumerates the same list)
SAMPLING_PARAMS = ("temperature", "top_p", "top_k", "min_p", "max_tokens", "presence_penalty",
                   "frequency_penalty", "repetition_penalty", "seed", "stop")


@dataclass(frozen=True)
class RequestProfile:
    set: dict[str, Any] = field(default_factory=dict)
    server_default: tuple[str, ...] = ()

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


def profile_from_dict(d: dict[str, Any] | None, *, file: str) -> RequestProfile:
    """Schema-validated `serving.request_profile` -> RequestProfile; a parameter both set and left to the
    server is a ConfigError naming it."""
    from pipeline.errors import ConfigError

    d = d or {}
    values = dict(d.get("set") or {})
    left = tuple(dict.fromkeys(d.get("server_default") or ()))
    both = sorted(set(values) & set(left))
    if both:
        raise ConfigError(f"{', '.join(both)} cannot be both set by the clients and left to the server's default",
                          file=file, path=f"serving.request_profile.set.{both[0]}")
    return RequestProfile(set=values, server_default=left)
