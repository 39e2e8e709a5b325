"""Run the load stage (pipeline/gate/stages/load.py) against an already running vLLM server, without a gate:
for the A/A test, which needs several load runs on one boot. Production is whatever load details the caller
hands in (the `load` stage details an earlier run produced, as the registry reads them from its report)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

from pipeline.config.release import load_release
from pipeline.core.result import StageResult
from pipeline.gate.context import GateContext
from pipeline.integrations.registry import Baseline


class FixedProduction:
    """A baseline store whose production version is version 1 with the given load details (None: none yet)."""

    def __init__(self, load: dict[str, Any] | None):
        self.load = load

    def production(self, model_name: str) -> Baseline | None:
        return None if self.load is None else Baseline("1", "aa-production-run", None, {}, {}, self.load)


def run_load_stage(server: Any, release_file: Path, run_dir: Path, production: dict[str, Any] | None) -> StageResult:
    """The load stage of `release_file`'s gates.load against the running VllmServer `server`."""
    from pipeline.gate.stages import load

    ctx = GateContext(release=load_release(release_file), run_dir=run_dir, home=run_dir / "home")
    ctx.endpoint = server.endpoint
    ctx.server = server
    ctx.model_dir = SimpleNamespace(path=server.model_dir)
    ctx.baseline_store = FixedProduction(production)
    with ctx.cleanup:  # as the gate's runner does: the stage's serving-benchmark worker is stopped after it
        return load.run(ctx)
