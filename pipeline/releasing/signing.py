"""Signed gate statements (Ed25519): what a release gate judged, signed with a key only the release environment
holds; `promote` verifies it against release.yaml's public keys and the MLflow record.

The statement is a flat JSON object of what was judged (model, pin and every file digest, suite/evalset/config
digests, verdict, exit code, baseline version, the sha256 of report.json and items.json as recorded, gate id, run
id, key id, signing time). Its canonical bytes (sorted keys, no whitespace, UTF-8) are what is signed, so a verifier
re-encodes the parsed statement and any changed field breaks the signature.

    signer = load_signer(file=None)              # $MODELGATE_SIGNING_KEY (PEM) or --signing-key-file; None: unsigned
    stmt = statement(report, run_id=..., report_sha256=..., key_id=signer.key_id)
    sig = signer.sign(stmt)                      # raw 64 bytes
    verify(stmt, sig, keys)                      # Refused unless a configured, in-window key with its id verifies it

Key ids are derived from the public key (`ed25519:` + the first 16 hex digits of the sha256 of its 32 raw bytes),
so a private key needs no separate id and release.yaml cannot name a key by the wrong id.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

# release.yaml's public keys are parsed with the configuration (config/keys.py); the gate kinds and the key
# variables' names are shared words (core/): re-exported here, where their users have always found them
from pipeline.config.keys import PublicKey as PublicKey
from pipeline.config.keys import instant as _instant
from pipeline.config.keys import key_id as key_id
from pipeline.config.keys import parse_public_keys as parse_public_keys
from pipeline.config.keys import raw_public as raw_public
from pipeline.core import tags as tagnames
from pipeline.core.gatekind import ADVISORY as ADVISORY
from pipeline.core.gatekind import GATE_KIND_TAG as GATE_KIND_TAG
from pipeline.core.gatekind import GATE_KINDS as GATE_KINDS
from pipeline.core.gatekind import RELEASE as RELEASE
from pipeline.core.secrets import AUDIT_KEY_ENV as AUDIT_KEY_ENV
from pipeline.core.secrets import SIGNING_KEY_ENV
from pipeline.errors import BadInput, ConfigError, Refused
from pipeline.util.secrets import register_secret_value

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from pipeline.report.document import GateReport

STATEMENT_TYPE = "modelgate.gate-statement/1"
SIGNATURE_DIR = "signature"  # the run's artifact directory: statement.json, statement.sig
STATEMENT_FILE = "statement.json"
SIGNATURE_FILE = "statement.sig"
STATUS_TAG = tagnames.SIGNATURE_STATUS  # the version's tag: signed | unsigned (display only; verification decides)
SIGNED, UNSIGNED = "signed", "unsigned"
# versions signed before the signature moved to the artifact carried it as tags (still read: promote verifies them)
LEGACY_SIGNATURE_TAG = tagnames.LEGACY_SIGNATURE
LEGACY_KEY_ID_TAG = tagnames.LEGACY_SIGNATURE_KEY_ID


def canonical(stmt: dict[str, Any]) -> bytes:
    """The bytes that are signed: sorted keys, no insignificant whitespace, UTF-8."""
    return json.dumps(stmt, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def config_digest(raw: dict[str, Any]) -> str:
    """sha256 of release.yaml's gating-relevant content: the model name, `gates` (what is checked and the
    thresholds) and `serving.request_profile` (how the requests look). Not the pin (signed separately), nor
    who may release or which keys verify."""
    relevant = {"model": (raw.get("model") or {}).get("name"), "gates": raw.get("gates") or {},
                "request_profile": (raw.get("serving") or {}).get("request_profile")}
    return sha256_hex(json.dumps(relevant, sort_keys=True, separators=(",", ":"), default=str).encode())


def statement(report: GateReport, *, run_id: str, report_sha256: str, key_id: str,
              signed_at: str | None = None, items_sha256: str | None = None) -> dict[str, Any]:
    """What a release gate judged, as signed. `items_sha256` (of the run's items.json) and `report_sha256` (its
    report.json, which holds the load samples) make the per-item results a later gate pairs with part of what is
    signed: a baseline is verified against them before it is used (releasing/chain.py)."""
    cand = report.candidate
    src = report.source_control
    return {
        "type": STATEMENT_TYPE,
        "gate_kind": report.gate_kind,
        "model_name": report.model_name,
        "source": cand.source, "repo": cand.repo, "revision": cand.revision,
        "files": dict(sorted(cand.files.items())),
        "digests": dict(sorted(report.digests.items())),
        "config_digest": report.config_digest or "",
        "verdict": str(report.verdict), "exit_code": int(report.exit_code),
        "baseline_version": report.baseline_version or "",
        "report_sha256": report_sha256,
        **({"items_sha256": items_sha256} if items_sha256 else {}),
        "gate_id": report.gate_id, "run_id": run_id,
        "repo_commit": src.commit if src else "",
        "key_id": key_id,
        "signed_at": signed_at or dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }


@dataclass(frozen=True)
class Signer:
    private: Ed25519PrivateKey
    key_id: str

    def sign(self, stmt: dict[str, Any]) -> bytes:
        return self.private.sign(canonical(stmt))


def _parse_private(pem: bytes, where: str) -> Ed25519PrivateKey:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:  # never quote the value: it is a secret
        raise BadInput(f"the signing key in {where} is not an unencrypted PEM private key") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise BadInput(f"the signing key in {where} is not an Ed25519 key")
    return key


def _register(pem: str) -> None:
    """The key's text never leaves the process: the whole PEM and its base64 body are redacted everywhere."""
    register_secret_value(pem.strip())
    body = "".join(line.strip() for line in pem.splitlines() if line.strip() and not line.startswith("-----"))
    register_secret_value(body)


def load_signer(file: Path | None = None, env: str = SIGNING_KEY_ENV) -> Signer | None:
    """The release gate's signing key: --signing-key-file, else $MODELGATE_SIGNING_KEY (PEM); None when neither.
    `env` AUDIT_KEY_ENV: the production environment's audit key."""
    if file is not None:
        try:
            text = Path(file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise BadInput(f"cannot read the signing key: {getattr(exc, 'strerror', None) or exc}",
                           file=str(file)) from exc
        where = str(file)
    else:
        text = os.environ.get(env, "")
        if not text.strip():
            return None
        where = f"${env}"
    _register(text)
    private = _parse_private(text.encode(), where)
    return Signer(private, key_id(private.public_key()))


def generate(out: Path) -> tuple[Path, dict[str, Any]]:
    """A new private key at `out` (mode 0600, never overwritten) and its release.yaml `signing.public_keys` entry."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    try:
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise BadInput("already exists; refusing to overwrite a key", file=str(out)) from None
    except OSError as exc:
        raise BadInput(f"cannot create the key file: {exc.strerror or exc}", file=str(out)) from exc
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    public = private.public_key()
    entry = {"id": key_id(public), "public_key": base64.b64encode(raw_public(public)).decode(),
             "not_before": dt.datetime.now(dt.UTC).date().isoformat(), "not_after": None}
    return out, entry


def verify(stmt: dict[str, Any], signature: bytes, keys: tuple[PublicKey, ...], where: str, *,
           time_field: str = "signed_at", server_time: dt.datetime | None = None,
           max_lag: dt.timedelta = dt.timedelta(hours=24), keys_name: str = "signing.public_keys") -> PublicKey:
    """The configured key that signed `stmt`; Refused for no keys, an unknown or out-of-window key, a bad signature.

    The statement's own time (`time_field`) is the signer's claim. With `server_time` (when the tracking server
    recorded the signed object: the model version's creation time), the key must be valid at that time too, and
    the claimed time must lie within [server_time - 5 min, server_time + max_lag]: a retired key cannot sign now
    with a backdated time, because the server's clock, not the signer's, dates the record."""
    from cryptography.exceptions import InvalidSignature

    if not keys:
        raise Refused(f"{where}: no signing keys configured ({keys_name} in release.yaml): no record can be "
                      "verified, so nothing can be promoted")
    kid = stmt.get("key_id")
    key = next((k for k in keys if k.id == kid), None)
    if key is None:
        raise Refused(f"{where}: signed by key {kid!r}, which is not in {keys_name} of release.yaml")
    try:
        key.public.verify(signature, canonical(stmt))
    except InvalidSignature:
        raise Refused(f"{where}: the signature does not verify with key {kid} (the signed statement was changed, "
                      "or signed by another key)") from None
    try:
        when = _instant(stmt.get(time_field), False, "", time_field)
    except ConfigError:
        raise Refused(f"{where}: the statement's {time_field} {stmt.get(time_field)!r} is not a time") from None
    if not key.valid_at(when):
        raise Refused(f"{where}: signed at {when.isoformat()} by key {kid}, outside its validity window "
                      f"({key.window()})")
    if server_time is not None:
        if not key.valid_at(server_time):
            raise Refused(f"{where}: recorded by the tracking server at {server_time.isoformat(timespec='seconds')}, "
                          f"outside the validity window of key {kid} ({key.window()}); its claimed signing time "
                          f"{when.isoformat()} is not what dates it")
        if not server_time - dt.timedelta(minutes=5) <= when <= server_time + max_lag:
            raise Refused(f"{where}: claims to be signed at {when.isoformat()}, but the tracking server recorded it "
                          f"at {server_time.isoformat(timespec='seconds')}: a signature is made within "
                          f"{max_lag.total_seconds() / 3600:g} h after its record, never before it (a backdated or "
                          "replayed signature)")
    return key
