"""`modelgate sync`: record the gate reports that were kept locally because MLflow could not take them.

A gate saves report.json (with items.json and its stage files) in its run directory before it touches
MLflow; when the tracking server is unreachable at the end of the gate, or goes away while the gate records,
the gate exits 3 and the report stays there with `tracking.model_version` unset. `sync` records such a report
exactly like the gate would have (`gate.record`: one run, one model version, the `candidate` alias):

- already recorded (its run and its model version exist): nothing is written, the report says so;
- half recorded (the run exists, its model version does not): the same run is completed, no second run;
- not recorded: a run is created, unless one tagged with the report's gate_id already exists.

Interrupted gates are never recorded (by design), so sync skips them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pipeline.core.rundir import REPORT_FILE, RunDir
from pipeline.core.verdict import Verdict
from pipeline.errors import BadInput, InfraError
from pipeline.gate.record import record, save_report
from pipeline.integrations import registry, traces, tracking
from pipeline.report.document import GateReport
from pipeline.util.progress import Progress


@dataclass(frozen=True)
class Synced:
    run_dir: Path
    gate_id: str
    status: str  # recorded | already recorded | skipped
    run_id: str | None = None
    model_version: str | None = None
    note: str = ""

    def line(self) -> str:
        where = f" (run {self.run_id}, model version {self.model_version})" if self.run_id else ""
        return f"{self.gate_id}: {self.status}{where}{': ' + self.note if self.note else ''}"


def load_report(run_dir: Path) -> GateReport:
    """The gate report kept in `run_dir`; anything that is not one is bad input (exit 2)."""
    path = RunDir(run_dir).report
    if not path.is_file():
        raise BadInput(f"no gate report here ({REPORT_FILE} missing)", file=str(run_dir))
    try:
        return GateReport.load(path)
    except (ValueError, InfraError) as exc:
        raise BadInput(f"not a gate report: {' '.join(str(exc).split())[:200]}", file=str(path),
                       path=getattr(exc, "field", None)) from exc


def recorded(report: GateReport, uri: str) -> bool:
    """True when the report's run and its model version both exist in the store at `uri`."""
    info = report.tracking
    advisory = report.gate_kind == "advisory"  # an advisory gate registers no version
    if not info.run_id or not (info.model_version or advisory):
        return False
    store = registry.Registry(uri)
    run = store.run(info.run_id)
    if run is None or not run.active:
        return False
    if advisory:
        return True
    version = store.version(report.model_name, str(info.model_version))
    return version is not None and version.run_id == info.run_id


def sync_run_dir(run_dir: Path, *, uri_override: str | None = None, progress: Progress = print) -> Synced:
    run_dir = Path(run_dir).resolve()
    files = RunDir(run_dir)
    report = load_report(run_dir)
    gate_id = report.gate_id
    if report.verdict == Verdict.INTERRUPTED:
        return Synced(run_dir, gate_id, "skipped", note="an interrupted gate is not recorded")
    if not files.items.is_file():
        raise BadInput(f"{files.items.name} is missing: the per-item results cannot be recorded",
                       file=str(run_dir))
    # the store the gate tried, unless --tracking-uri or $MLFLOW_TRACKING_URI (which carries any credentials)
    uri = tracking.resolve_uri(uri_override, configured=report.tracking.uri, root=None)
    tracking.preflight(uri)
    if recorded(report, uri):
        info = report.tracking
        run_id = info.run_id or ""  # set: recorded() checked it
        if info.error:  # only the last step failed: the MLflow copy of the report is the stale one
            save_report(report.with_tracking(error=None), run_dir)
            tracking.upload(uri, run_id, files.report)
            tracking.upload(uri, run_id, files.markdown)
            tracking.upload(uri, run_id, files.html)
            progress(traces.ensure_traces(uri, report, run_dir))
            return Synced(run_dir, gate_id, "recorded", run_id, str(info.model_version),
                          note="the report in MLflow was brought up to date")
        note = traces.ensure_traces(uri, report, run_dir)  # logged once: a no-op when they are there
        return Synced(run_dir, gate_id, "already recorded", run_id, str(info.model_version),
                      note="" if note.startswith("per-item traces already") else note)
    progress(f"recording gate {gate_id} from {run_dir} in {tracking.display_uri(uri)}")
    if tracking.display_uri(uri) != report.tracking.uri:
        report = report.with_tracking(uri=tracking.display_uri(uri))
    report = record(report, run_dir, uri)
    return Synced(run_dir, gate_id, "recorded", report.tracking.run_id, report.tracking.model_version)


def kept_run_dirs(root: Path) -> list[Path]:
    """Every run directory under `root`/runs holding a report.json, oldest gate first."""
    runs = Path(root) / "runs"
    return sorted(p.parent for p in runs.glob(f"*/{REPORT_FILE}")) if runs.is_dir() else []


def sync_all(run_dirs: list[Path], *, uri_override: str | None = None, progress: Progress = print) -> list[Synced]:
    """Sync each; an unreachable store stops at the first failure (the others would fail the same way)."""
    return [sync_run_dir(run_dir, uri_override=uri_override, progress=progress) for run_dir in run_dirs]
