"""Rollback readiness without servers: whose fault a rehearsal boot's failure is (serve_and_probe, with vLLM and
the probe replaced), what `history` derives from the audit trail, and how it says it."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.config.release import Pin, load_release
from pipeline.errors import StartupError
from pipeline.releasing import readiness
from pipeline.releasing.history import to_text
from pipeline.serving.probe import ProbeResult, Refusal
from pipeline.serving.vllm_server import Endpoint
from tests.support.paths import REPO
from tests.support.releases import write_release

LOGS = REPO / "tests" / "fixtures" / "vllm_logs"
PIN = Pin("git", "hub/model", "ab" * 20, {"config.json": "c" * 64})


class FakeServer:
    """Stands in for VllmServer: writes `log` to the log file and fails start-up, or serves."""

    def __init__(self, log: str | None):
        self.log = log

    def __call__(self, model_dir, name, serving, log_file, **kwargs):
        self.log_file, self.name = Path(log_file), name
        return self

    def __enter__(self) -> Endpoint:
        if self.log is not None:
            self.log_file.write_text((LOGS / self.log).read_text(encoding="utf-8"))
            raise StartupError("vLLM exited with code 1 during start-up", log_file=str(self.log_file), returncode=1)
        return Endpoint("http://127.0.0.1:1", self.name, self.log_file, 1, api_key="k")

    def __exit__(self, *exc: object) -> None:
        pass


@pytest.fixture
def release(tmp_path):
    return load_release(write_release(tmp_path))


def boot(monkeypatch, tmp_path, release, log: str | None, answer: ProbeResult | None = None):
    monkeypatch.setattr("pipeline.serving.vllm_server.VllmServer", FakeServer(log))
    monkeypatch.setattr("pipeline.serving.probe.probe", lambda *a, **k: answer)
    return readiness.serve_and_probe(release, tmp_path, PIN, tmp_path / "server.log", lambda _: None)


def test_a_version_that_does_not_load_is_not_ready_naming_the_root_error(monkeypatch, tmp_path, release):
    ok, why = boot(monkeypatch, tmp_path, release, "corrupt_weights.log")
    assert not ok and why.startswith("does not load in vLLM: safetensors._safetensors_rust.SafetensorError")


def test_an_environment_start_up_failure_is_raised_not_called_not_ready(monkeypatch, tmp_path, release):
    with pytest.raises(StartupError):
        boot(monkeypatch, tmp_path, release, "address_in_use.log")


def test_the_smoke_probe_decides_once_it_serves(monkeypatch, tmp_path, release):
    refused = ProbeResult(served_models=["x"], refusals=(Refusal("chat", 400, "chat template failed"),))
    ok, why = boot(monkeypatch, tmp_path, release, None, refused)
    assert not ok and "failed the smoke probe: the chat completion was answered with HTTP 400" in why
    ok, why = boot(monkeypatch, tmp_path, release, None, ProbeResult(served_models=["x"], chat_latency_s=0.5))
    assert ok and "answered a chat and a streamed completion (chat 0.50s)" in why


def event(kind: str, version: str, at: str, **tags: str) -> dict:
    return {"event": kind, "version": version, "at": at, "actor": "alice", "state": "completed",
            "audit_run_id": f"run-{at[-2:]}", **tags}


def test_last_proven_reads_promotions_rollbacks_and_rehearsals_and_keeps_the_last_success():
    events = [
        event("promote", "2", "2026-12-01T10:00:01", rollback_ready="ready", rollback_ready_version="1"),
        event("rollback-check", "1", "2026-12-01T10:00:02", outcome="ready", how="rehearsal with serve"),
        event("rollback-check", "1", "2026-12-01T10:00:03", outcome="not-ready", how="rehearsal", detail="gone"),
        event("promote", "3", "2026-12-01T10:00:04", rollback_ready="overridden", rollback_ready_version="2",
              rollback_ready_detail="moved"),
        {**event("rollback", "2", "2026-12-01T10:00:05", rollback_ready="ready"), "state": "lost"},
        event("promote", "1", "2026-12-01T10:00:06", rollback_ready="none"),
    ]
    proven = readiness.last_proven(events)
    assert proven["1"]["proven_at"] == "2026-12-01T10:00:02" and proven["1"]["proven_how"] == "rehearsal with serve"
    assert proven["1"]["last_check"]["outcome"] == "not-ready" and proven["1"]["last_check"]["detail"] == "gone"
    assert proven["2"]["proven_at"] is None and proven["2"]["last_check"]["how"] == "at promotion"
    assert set(proven) == {"1", "2"}, "a lost rollback and a first promotion prove nothing"


def test_history_text_says_when_the_rollback_path_was_last_proven():
    doc = {"model": "bot", "aliases": {"production": "2", "previous": "1", "candidate": None}, "in_progress": [],
           "rollback_path": {"version": "1", "proven_at": "2026-12-01T10:00:00+00:00", "proven_by": "bob",
                             "proven_how": "at promotion", "last_check": {"outcome": "ready"}},
           "events": [event("promote", "2", "2026-12-01T10:00:00+00:00", from_version="1", reason="",
                            rollback_ready="ready", rollback_ready_version="1"),
                      event("rollback-check", "1", "2026-12-01T11:00:00+00:00", outcome="not-ready",
                            how="rehearsal", detail="revision gone")]}
    lines = to_text(doc).splitlines()
    assert lines[1] == "  rollback path: previous v1 last proven 2026-12-01T10:00:00+00:00 (at promotion, by bob)"
    assert lines[2].endswith("promote   v2 from v1 by alice; rollback path to v1 proven")
    assert lines[3].endswith("rollback-check v1 not-ready (rehearsal) by alice: revision gone")
    doc["rollback_path"] = {"version": "1", "proven_at": None, "last_check": {
        "outcome": "not-ready", "at": "2026-12-01T11:00:00+00:00", "how": "rehearsal", "detail": "revision gone"}}
    assert to_text(doc).splitlines()[1] == ("  rollback path: previous v1 NOT READY at its last check "
                                            "2026-12-01T11:00:00+00:00 (rehearsal): revision gone; never proven "
                                            "(run `modelgate rollback --check`)")
