"""The state one gate run carries from stage to stage: the release, where its files go, and what earlier
stages produced (the verified model directory, the running endpoint). Servers register their teardown on
`cleanup`, which the runner always closes."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.config.release import Release
from pipeline.core.rundir import RunDir
from pipeline.util.secrets import new_api_key


@dataclass
class GateContext:
    release: Release
    run_dir: Path  # the local report directory of this gate: report.json, server logs, stage artifacts
    home: Path  # the model cache and demo hub (MODELGATE_HOME, default <repo>/.modelgate)
    enforce_eager: bool | None = None  # CLI override of serving.enforce_eager
    cleanup: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)
    model_dir: Any = None  # fetch.ModelDir of the candidate
    endpoint: Any = None  # integrations.vllm_server.Endpoint of the candidate
    server: Any = None  # the VllmServer, when spawned (for liveness checks)
    # per-item values the comparison pairs with the baseline: "format/pass" or "task/metric" -> {item: value}
    items: dict[str, dict[str, float]] = field(default_factory=dict)
    digests: dict[str, str] = field(default_factory=dict)  # what the items were judged on: suites, evalsets
    # the candidate's replay answers by request hash (scrubbed), recorded with the items: a later gate whose
    # production this candidate has become pairs with them instead of asking it again
    replay_answers: dict[str, dict[str, Any]] = field(default_factory=dict)
    # gates.replay.source mlflow_traces: (config.traffic.Traffic, traces without a chat span), read before any boot
    replay_traffic: Any = None
    baseline_store: Any = None  # integrations.tracking.BaselineStore (None: no baseline lookups)
    case_sample: int | None = None  # an advisory gate: this many prompt cases, seeded by the revision (None: all)
    # the staging servers' API key: random per gate run, registered as a secret, never on a command line
    api_key: str = field(default_factory=new_api_key, repr=False)
    # started with the candidate's server, before it is healthy (the serve stage calls them with ctx.endpoint set):
    # later stages' clients whose start-up overlaps the boot (gate/run.py fills it from the stages it runs)
    warm_up: list[Callable[[GateContext], None]] = field(default_factory=list)
    lmeval_prestart: Any = None  # tools.lmeval.run.Prestarted: the evals' lm-eval run, started early (evals.prestart)
    bench_worker: Any = None  # tools.servebench.BenchWorker of the load test, started early (load.prestart)

    def cleanup_warm_up(self) -> None:
        """Stop the clients started for the later stages (the server did not come up: nothing will use them)."""
        started, self.lmeval_prestart = self.lmeval_prestart, None
        if started is not None:
            started.stop()
        worker, self.bench_worker = self.bench_worker, None
        if worker is not None:
            worker.close()

    @property
    def files(self) -> RunDir:
        """The named files of the run directory (report.json, server.log, a stage's folder)."""
        return RunDir(self.run_dir)
