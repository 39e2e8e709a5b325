"""The names of the secret environment variables: their values are redacted from everything modelgate writes
(util/secrets.py) and kept from child processes. release.yaml's `security.secret_env` adds to them."""

from __future__ import annotations

SIGNING_KEY_ENV = "MODELGATE_SIGNING_KEY"  # the release gate's key: signs gate statements (releasing/signing.py)
AUDIT_KEY_ENV = "MODELGATE_AUDIT_KEY"  # the production environment's key: seals audit events (releasing/seal.py)
DEFAULT_SECRET_ENV = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "GITHUB_TOKEN", "MLFLOW_TRACKING_PASSWORD",
                      "MLFLOW_TRACKING_TOKEN", "AWS_SECRET_ACCESS_KEY", SIGNING_KEY_ENV, AUDIT_KEY_ENV)
