"""The runner: a plain loop over an explicit, ordered list of stages.

Each stage is `run(ctx) -> StageResult`. Fail-fast is explicit: after a stage that errored or was
interrupted, the remaining stages are recorded as skipped with the reason; after a stage that *failed*
(rejected the candidate), only the stages named in `after_failure` still run (the other quality stages,
so the report shows every failing metric), the rest (e.g. the load test) are skipped; but a failed stage
named in `prerequisites` (fetch, serve: a candidate that does not load has nothing to evaluate) skips every
later stage. Infrastructure errors
(and OSErrors: a full disk, an unwritable directory) become an `error` status with the message (and the
server log tail); bad input propagates (exit 2, nothing recorded); SIGINT/SIGTERM mark the running stage
`interrupted`. Servers are torn down in every case.

`checkpoint(name)`, when given, is called before each stage: the gate's background look-ups (gate/prefetch.py)
raise there the error that, read serially before the stages, would have stopped the gate at its start; it
propagates like bad input (servers torn down, nothing recorded).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Sequence

from pipeline.core.result import StageResult, Status
from pipeline.core.rundir import SERVER_LOG
from pipeline.errors import BadInput, Interrupted, ModelgateError, ServerError
from pipeline.gate.context import GateContext
from pipeline.util.progress import progress_for

StageRun = Callable[[GateContext], StageResult]
Stage = tuple[str, StageRun]  # (name, run): the name is the stage module's NAME (gate/run.py STAGES)
STOPPING = (Status.FAILED, Status.ERROR, Status.INTERRUPTED)


def run_stages(ctx: GateContext, stages: Sequence[Stage], after_failure: Collection[str] = (),
               prerequisites: Collection[str] = (),
               checkpoint: Callable[[str], None] | None = None) -> list[StageResult]:
    results: list[StageResult] = []
    with ctx.cleanup:
        for name, run in stages:
            stopping = STOPPING if name not in after_failure else (Status.ERROR, Status.INTERRUPTED)
            blocker = next((r for r in results if r.status in stopping
                            or (r.status == Status.FAILED and r.name in prerequisites)), None)
            if blocker is not None:
                results.append(StageResult(name, Status.SKIPPED,
                                           reasons=[f"not run: stage {blocker.name} {blocker.status.value}"]))
                continue
            if checkpoint is not None:
                try:
                    checkpoint(name)  # its errors propagate (module doc); an interrupt while it waits is the stage's
                except (KeyboardInterrupt, Interrupted) as exc:
                    results.append(StageResult(name, Status.INTERRUPTED, reasons=[f"interrupted by {_signal(exc)}"]))
                    continue
            progress = progress_for(name)
            progress("started")
            t0 = time.monotonic()
            try:
                result = run(ctx)
            except BadInput:
                raise
            except (KeyboardInterrupt, Interrupted) as exc:
                result = StageResult(name, Status.INTERRUPTED, reasons=[f"interrupted by {_signal(exc)}"])
            except OSError as exc:  # disk full, unwritable directory, too many open files: infrastructure
                where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
                result = StageResult(name, Status.ERROR,
                                     reasons=[f"{type(exc).__name__}: {exc.strerror or exc}{where}"])
            except ModelgateError as exc:
                result = StageResult(name, Status.ERROR, reasons=[exc.one_line()])
                if isinstance(exc, ServerError):
                    result.details["log_tail"] = exc.log_tail
                    if exc.log_file:
                        result.artifacts[SERVER_LOG] = exc.log_file
            result.name = name
            result.duration_s = time.monotonic() - t0
            progress(f"{result.status.value} in {result.duration_s:.1f}s")
            results.append(result)
    return results


def _signal(exc: BaseException) -> str:
    return exc.signal_name if isinstance(exc, Interrupted) else "SIGINT"
