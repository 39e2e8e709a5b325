"""The kinds of gate: a release gate (the full configuration, signed, promotable) and an advisory one (pull
requests: recorded in the advisory experiment, never registered). The kind is a tag and a param of the gate run."""

from __future__ import annotations

from pipeline.core import tags as tagnames

GATE_KIND_TAG = tagnames.GATE_KIND  # the gate run's tag (and param gate_kind)
RELEASE, ADVISORY = "release", "advisory"
GATE_KINDS = (RELEASE, ADVISORY)
