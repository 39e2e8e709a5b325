"""The claim rule without MLflow: earliest in-progress operation wins, a late-landing earlier claim still
wins exactly once, an interrupted operation is resumed only by the same command."""

from __future__ import annotations

import pytest

from pipeline.errors import Conflict
from pipeline.releasing import claim
from pipeline.releasing.audit import IN_PROGRESS, LOST, PROMOTE, ROLLBACK, AuditEvent


class FakeLog:
    def __init__(self):
        self.runs: list[AuditEvent] = []
        self.on_sleep = None

    def add(self, run_id, start_ms, event=PROMOTE, version="2"):
        ev = AuditEvent(run_id=run_id, event=event, model_name="m", version=version, actor="alice", at="t",
                        start_ms=start_ms, state=IN_PROGRESS, problem=None)  # sealed by a trusted key
        self.runs.append(ev)
        return ev

    def events(self, model_name, state=None, **_):
        return sorted((e for e in self.runs if state is None or e.state == state), key=lambda e: (e.start_ms, e.run_id))

    def finish(self, ev, state):
        ev.state = state


@pytest.fixture
def log(monkeypatch):
    fake = FakeLog()

    def sleep(_):
        if fake.on_sleep:
            fake.on_sleep()
    monkeypatch.setattr(claim.time, "sleep", sleep)
    return fake


def test_alone_wins(log):
    mine = log.add("a", 100)
    claim.acquire(log, mine)
    assert mine.state == IN_PROGRESS


def test_later_claim_loses_and_is_marked_lost(log):
    log.add("a", 100)
    mine = log.add("b", 101)
    with pytest.raises(Conflict, match="won the claim"):
        claim.acquire(log, mine)
    assert mine.state == LOST


def test_an_earlier_claim_that_lands_during_the_settle_wins(log):
    mine = log.add("b", 101)
    log.on_sleep = lambda: log.add("a", 100)  # stamped earlier, stored later
    with pytest.raises(Conflict):
        claim.acquire(log, mine)
    assert mine.state == LOST


def test_same_start_time_is_decided_by_run_id_on_both_sides(log):
    a, b = log.add("a", 100), log.add("b", 100)
    claim.acquire(log, a)
    with pytest.raises(Conflict):
        claim.acquire(log, b)


def test_interrupted_operation_is_resumed_only_by_the_same_command(log):
    log.add("a", 100, event=PROMOTE, version="3")
    assert claim.find_resumable(log, "m", PROMOTE, "3").run_id == "a"
    with pytest.raises(Conflict, match="modelgate promote --version 3"):
        claim.find_resumable(log, "m", PROMOTE, "4")
    with pytest.raises(Conflict, match="modelgate promote --version 3"):
        claim.find_resumable(log, "m", ROLLBACK, "3")
    assert claim.find_resumable(FakeLog(), "m", PROMOTE, "3") is None
