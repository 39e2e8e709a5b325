"""The MLflow tag names modelgate writes and reads, each written once here (every module imports its names).

A `modelgate.*` tag is a fact only where something its writer could not forge vouches for it: a gate run's and a
model version's tags are re-checked against the signed record (releasing/policy.py), an audit run's are covered by
its seal (releasing/seal.py). MLflow's own `mlflow.*` tags are display."""

from __future__ import annotations

PREFIX = "modelgate."

# gate runs, and the model versions they register
KIND = PREFIX + "kind"  # gate | audit (the run's kind)
VERDICT = PREFIX + "verdict"
REVISION = PREFIX + "revision"
MODEL_NAME = PREFIX + "model_name"
GATE_ID = PREFIX + "gate_id"
AUTHOR = PREFIX + "author"
BASELINE_VERSION = PREFIX + "baseline_version"
GATE_KIND = PREFIX + "gate_kind"  # release | advisory (also the param gate_kind)
GATE_RUN_ID = PREFIX + "gate_run_id"  # on a version: the run that judged it
REPLAY_POWER = PREFIX + "replay_power"
TRACES = PREFIX + "traces"
# versions registered before version.json carried the whole record as tags
SOURCE, REPO, LEGACY_FILES, DIGEST_PREFIX = PREFIX + "source", PREFIX + "repo", PREFIX + "files", PREFIX + "digest."
SIGNATURE_STATUS = PREFIX + "signature.status"  # signed | unsigned (display only: verification decides)
LEGACY_SIGNATURE, LEGACY_SIGNATURE_KEY_ID = PREFIX + "signature", PREFIX + "signature.key_id"

# release operations, on the versions they touch
PROMOTED_AT = PREFIX + "promoted_at"
ROLLED_BACK_AT = PREFIX + "rolled_back_at"
ROLLED_BACK_TO_AT = PREFIX + "rolled_back_to_at"
ROLLBACK_CHECK_PREFIX = PREFIX + "rollback_check."

# audit runs (the seal covers every `modelgate.*` tag but itself)
SEAL = PREFIX + "seal"
EVENT = PREFIX + "event"
ACTOR = PREFIX + "actor"
PREVIOUS_AFTER = PREFIX + "previous_after"
APPROVERS = PREFIX + "approvers"
PROMOTION_ID = PREFIX + "promotion_id"
GIT_TAG = PREFIX + "git_tag"
FINISHED_AT = PREFIX + "finished_at"
