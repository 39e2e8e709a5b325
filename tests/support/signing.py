"""Signing keys for tests: one Ed25519 key per test session (generated in memory, never written to the repo),
its release.yaml `signing.public_keys` entry, and more keys for rotation and wrong-key tests.

    KEY.signer()                       # what record_gate signs with
    KEY.entry(not_before="2000-01-01") # {id, public_key, not_before, not_after}
    other = SigningKey.new()              # a key release.yaml does not trust
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from pipeline.releasing import signing


@dataclass(frozen=True)
class SigningKey:
    private: Ed25519PrivateKey

    @classmethod
    def new(cls) -> SigningKey:
        return cls(Ed25519PrivateKey.generate())

    @cached_property
    def pem(self) -> str:
        return self.private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()).decode()

    @property
    def id(self) -> str:
        return signing.key_id(self.private.public_key())

    def signer(self) -> signing.Signer:
        return signing.Signer(self.private, self.id)

    def entry(self, not_before: str = "2000-01-01", not_after: str | None = None) -> dict[str, Any]:
        raw = signing.raw_public(self.private.public_key())
        return {"id": self.id, "public_key": base64.b64encode(raw).decode(), "not_before": not_before,
                "not_after": not_after}


KEY = SigningKey.new()  # this session's release-gate key: make_team trusts it, record_gate signs with it
AUDIT_KEY = SigningKey.new()  # this session's production-environment key: seals approvals, promotions, rollbacks


def trusted_signing() -> dict[str, Any]:
    """release.yaml's `signing` section trusting the session's gate key and audit key."""
    return {"public_keys": [KEY.entry()], "audit_keys": [AUDIT_KEY.entry()]}


def audit_env() -> dict[str, str]:
    """What the promote and rollback workflows hold: the production environment's audit key."""
    return {signing.AUDIT_KEY_ENV: AUDIT_KEY.pem}
