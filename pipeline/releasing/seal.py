"""Sealed audit events: every approval, promotion, rollback and readiness check carries an Ed25519 seal made with
the audit key, which only the `production` environment holds (MODELGATE_AUDIT_KEY); the next command verifies it
against release.yaml's `signing.audit_keys` before it believes the event.

An MLflow credential alone can create a run in the audit experiment with any tags it likes; it cannot make a seal
that verifies. The seal covers the run's id (so it cannot be copied onto another run) and every `modelgate.*` tag
of the run (so no fact of the event can be added, changed or removed after it was sealed). Each write of an event
(its opening, a finished step, its end) re-seals it in the same batch as the tags it writes.

    seal_tag = seal(run_id, tags, signer)            # the value of the run's tag `modelgate.seal`
    problem = verify(run_id, tags, keys)             # None when sealed by a trusted audit key in its window
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import TYPE_CHECKING

from pipeline.config.keys import WATCH_ACTOR, WATCH_EVENTS
from pipeline.core import tags as tagnames
from pipeline.errors import Refused

if TYPE_CHECKING:
    from pipeline.releasing.signing import PublicKey, Signer

SEAL_TAG = tagnames.SEAL
SEAL_TYPE = "modelgate.audit-event/1"

PREFIX = tagnames.PREFIX


def covered(tags: dict[str, str]) -> dict[str, str]:
    """The tags a seal covers: every `modelgate.*` tag but the seal itself (MLflow's own `mlflow.*` tags are
    display, never read as facts)."""
    return dict(sorted((k, v) for k, v in tags.items() if k.startswith(PREFIX) and k != SEAL_TAG))


def _statement(run_id: str, tags: dict[str, str], key_id: str, sealed_at: str) -> dict[str, object]:
    return {"type": SEAL_TYPE, "run_id": run_id, "tags": covered(tags), "key_id": key_id, "sealed_at": sealed_at}


def seal(run_id: str, tags: dict[str, str], signer: Signer, sealed_at: str) -> str:
    """The seal tag's value: key id, time and the signature over the run id and its covered tags."""
    sig = signer.sign(_statement(run_id, tags, signer.key_id, sealed_at))
    return json.dumps({"key_id": signer.key_id, "sealed_at": sealed_at, "sig": base64.b64encode(sig).decode()},
                      sort_keys=True, separators=(",", ":"))


def verify(run_id: str, tags: dict[str, str], keys: tuple[PublicKey, ...]) -> str | None:
    """None when the run's seal verifies with a trusted audit key valid at the sealing time; else what is wrong
    (unsealed, unknown key, a changed tag, outside the key's window)."""
    from pipeline.releasing import signing

    raw = tags.get(SEAL_TAG)
    if not raw:
        return "not sealed (written without the audit key)"
    if not keys:
        return "no audit keys configured (signing.audit_keys in release.yaml)"
    try:
        doc = json.loads(raw)
        sig = base64.b64decode(str(doc["sig"]), validate=True)
        key_id, sealed_at = str(doc["key_id"]), str(doc["sealed_at"])
    except (ValueError, KeyError, TypeError, binascii.Error):
        return "its seal is malformed"
    try:
        signing.verify(_statement(run_id, tags, key_id, sealed_at), sig, keys, "audit event", time_field="sealed_at",
                       keys_name="signing.audit_keys")
    except Refused as exc:
        return str(exc).removeprefix("audit event: ")
    key = next(k for k in keys if k.id == key_id)
    if key.scope == "watch":
        event, actor = tags.get(PREFIX + "event", ""), tags.get(PREFIX + "actor", "")
        if event not in WATCH_EVENTS or actor != WATCH_ACTOR:
            return (f"sealed by {key_id}, a watch key: it may seal only {'/'.join(sorted(WATCH_EVENTS))} by "
                    f"{WATCH_ACTOR}, not {event or '?'} by {actor or '?'}")
    return None
