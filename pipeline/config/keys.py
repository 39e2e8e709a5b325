"""release.yaml's `signing.public_keys` and `signing.audit_keys`: Ed25519 public keys with their validity windows,
parsed once with the configuration (`Release.signing_keys`, `Release.audit_keys`). Signing and verifying with them
is releasing/signing.py's job.

Key ids are derived from the public key (`ed25519:` + the first 16 hex digits of the sha256 of its 32 raw bytes),
so release.yaml cannot name a key by the wrong id. `cryptography` is imported where a key is read, not here, so
that `modelgate --help` stays light.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pipeline.config.watch import WATCH_ACTOR as WATCH_ACTOR
from pipeline.errors import ConfigError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey


# what an audit key of scope "watch" may seal: rollbacks by this actor (the production-watch environment's key)
WATCH_EVENTS = frozenset({"rollback"})


def raw_public(public: Ed25519PublicKey) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(public: Ed25519PublicKey) -> str:
    return "ed25519:" + hashlib.sha256(raw_public(public)).hexdigest()[:16]


@dataclass(frozen=True)
class PublicKey:
    id: str
    public: Ed25519PublicKey
    not_before: dt.datetime
    not_after: dt.datetime | None  # None: no end
    scope: str = "any"  # audit keys: "watch" seals only rollbacks by modelgate-watch (WATCH_SCOPE)

    def valid_at(self, when: dt.datetime) -> bool:
        return self.not_before <= when and (self.not_after is None or when <= self.not_after)

    def window(self) -> str:
        return f"{self.not_before.isoformat()} .. {self.not_after.isoformat() if self.not_after else 'open'}"


def instant(value: Any, end: bool, file: str, path: str) -> dt.datetime:
    """A date (a whole day: from its start, or to its end) or an ISO 8601 time (UTC unless it says otherwise)."""
    if isinstance(value, dt.datetime):
        moment = value
    elif isinstance(value, dt.date):
        moment = dt.datetime.combine(value, dt.time.max if end else dt.time.min)
    else:
        text = str(value)
        try:
            moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
            if len(text) == 10:  # a date
                moment = dt.datetime.combine(moment.date(), dt.time.max if end else dt.time.min)
        except ValueError:
            raise ConfigError(f"{value!r} is not an ISO 8601 date or time", file=file, path=path) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def parse_public_keys(entries: list[dict[str, Any]], file: str, field: str = "public_keys") -> tuple[PublicKey, ...]:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    keys: list[PublicKey] = []
    for i, entry in enumerate(entries):
        where = f"signing.{field}[{i}]"
        text = str(entry["public_key"]).strip()
        try:
            if text.startswith("-----BEGIN"):
                public = serialization.load_pem_public_key(text.encode())
            else:
                public = Ed25519PublicKey.from_public_bytes(base64.b64decode(text, validate=True))
        except (ValueError, TypeError) as exc:
            raise ConfigError("not an Ed25519 public key (PEM, or base64 of its 32 raw bytes)", file=file,
                              path=f"{where}.public_key") from exc
        if not isinstance(public, Ed25519PublicKey):
            raise ConfigError("not an Ed25519 public key", file=file, path=f"{where}.public_key")
        if entry["id"] != key_id(public):
            raise ConfigError(f"id {entry['id']!r} is not this key's id {key_id(public)!r} (the id is derived from "
                              "the key: `modelgate keygen` prints the entry)", file=file, path=f"{where}.id")
        start = instant(entry["not_before"], False, file, f"{where}.not_before")
        stop = instant(entry["not_after"], True, file, f"{where}.not_after") \
            if entry.get("not_after") is not None else None
        if stop is not None and stop < start:
            raise ConfigError("not_after is before not_before", file=file, path=f"{where}.not_after")
        scope = str(entry.get("scope") or "any")
        if scope != "any" and field != "audit_keys":
            raise ConfigError("a scope is for audit_keys only: a gate key signs gate records", file=file,
                              path=f"{where}.scope")
        keys.append(PublicKey(entry["id"], public, start, stop, scope))
    return tuple(keys)
