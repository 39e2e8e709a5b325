"""Stages the pipeline will run but this version does not implement yet: they report `skipped` with that
reason, so a gate report never pretends a quality or load gate ran."""

from __future__ import annotations

from ..context import GateContext
from ..result import Status, StageResult


def not_implemented(name: str, issue: str):
    def run(ctx: GateContext) -> StageResult:
        return StageResult(name, Status.SKIPPED, reasons=[f"not implemented yet ({issue})"])

    return run
