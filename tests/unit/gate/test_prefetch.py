"""The gate's background baseline look-up (pipeline/gate/prefetch.py): one read, overlapping the boot; its
errors raised, unchanged, where the value is used."""

from __future__ import annotations

import threading

import pytest

from pipeline.errors import InfraError
from pipeline.gate import prefetch
from pipeline.integrations import registry


class Store:
    def __init__(self, answer=None, error=None, gate: threading.Event | None = None):
        self.answer, self.error, self.gate, self.asked = answer, error, gate, []

    def production(self, model_name):
        self.asked.append(model_name)
        if self.gate is not None:
            assert self.gate.wait(10), "the test never released the look-up"
        if self.error is not None:
            raise self.error
        return self.answer


@pytest.fixture
def alias(monkeypatch):
    """registry.Registry(uri).by_alias(...) answers `alias.value` or raises `alias.error`."""
    state = type("Alias", (), {"value": None, "error": None, "asked": []})()

    class FakeRegistry:
        def __init__(self, uri):
            self.uri = uri

        def by_alias(self, name, which):
            state.asked.append((self.uri, name, which))
            if state.error is not None:
                raise state.error
            return state.value

    monkeypatch.setattr(registry, "Registry", FakeRegistry)
    return state


def test_one_read_answers_every_stage_and_the_start_alias(alias):
    alias.value = "v3"
    store = Store(answer="baseline v3")
    lookups = prefetch.BaselinePrefetch("sqlite:///x.db", "m", store=store)
    assert lookups.production("m") == "baseline v3"
    assert lookups.production("m") == "baseline v3"  # the serve, compare and load stages: still one read
    assert lookups.production_at_start() == "v3"
    lookups.settle()
    assert store.asked == ["m"] and alias.asked == [("sqlite:///x.db", "m", registry.PRODUCTION)]


def test_a_failed_read_raises_its_own_error_where_the_value_is_used(alias):
    alias.error = InfraError("MLflow at x: reading alias 'production' of m failed: 403")
    lookups = prefetch.BaselinePrefetch("u", "m", store=Store(error=InfraError("cannot read items.json of run r")))
    with pytest.raises(InfraError, match="cannot read items.json of run r"):
        lookups.production("m")
    with pytest.raises(InfraError, match="reading alias 'production' of m failed: 403"):
        lookups.production_at_start()


def test_the_look_up_runs_in_the_background_and_is_waited_for(alias):
    release = threading.Event()
    store = Store(answer="b", gate=release)
    lookups = prefetch.BaselinePrefetch("u", "m", store=store)  # returns at once: the read is blocked
    with pytest.raises(TimeoutError):
        prefetch._Lookup().get(timeout_s=0)
    waiter = threading.Thread(target=lambda: release.set())
    waiter.start()
    assert lookups.production("m") == "b"
    waiter.join()


def test_another_model_is_read_when_asked(alias):
    store = Store(answer="other")
    lookups = prefetch.BaselinePrefetch("u", "m", store=store)
    lookups.settle()
    assert lookups.production("n") == "other" and store.asked == ["m", "n"]


def test_a_failed_alias_read_stops_the_gate_at_the_next_stage_with_its_own_error(alias, tmp_path):
    """As when it was read before the stages: exit 3 named by cause, the servers torn down, no later stage."""
    from pipeline.core.result import StageResult, Status
    from pipeline.gate.context import GateContext
    from pipeline.gate.runner import run_stages

    alias.error = InfraError("MLflow at x: reading alias 'production' of m failed: 403 Forbidden")
    lookups = prefetch.BaselinePrefetch("u", "m", store=Store(answer=None))
    lookups.settle()
    ran, torn_down = [], []
    ctx = GateContext(release=None, run_dir=tmp_path, home=tmp_path)  # type: ignore[arg-type]
    ctx.cleanup.callback(lambda: torn_down.append(True))

    def stage(name):
        def run(_ctx):
            ran.append(name)
            return StageResult(name, Status.PASSED)
        return name, run

    with pytest.raises(InfraError, match="reading alias 'production' of m failed: 403 Forbidden"):
        run_stages(ctx, [stage("fetch"), stage("serve")], checkpoint=lookups.check)  # fetch: failed already
    assert ran == [] and torn_down == [True]


def test_the_checkpoint_waits_for_the_alias_read_after_the_boot_and_not_during_it(alias):
    checked = []
    lookups = prefetch.BaselinePrefetch("u", "m", store=Store(answer="b"))
    lookups.settle()
    lookups._alias = prefetch._Lookup()  # stands for a read that has not finished yet
    lookups.check("fetch")  # overlapped: passes at once while the read runs
    lookups.check("serve")
    waiter = threading.Thread(target=lambda: checked.append(lookups.check("format")))
    waiter.start()
    waiter.join(0.2)
    assert waiter.is_alive()  # the first stage after the boot waits for the read
    lookups._alias.value = "v1"
    lookups._alias.done.set()
    waiter.join(10)
    assert checked == [None] and lookups.production_at_start() == "v1"


def test_stage_names_overlapped_are_the_gates():
    from pipeline.gate.stages import fetch, serve

    assert prefetch.OVERLAPPED == (fetch.NAME, serve.NAME)


def test_an_interrupt_while_the_checkpoint_waits_marks_that_stage_interrupted(tmp_path):
    from pipeline.core.result import StageResult, Status
    from pipeline.errors import Interrupted
    from pipeline.gate.context import GateContext
    from pipeline.gate.runner import run_stages

    def checkpoint(name):
        if name == "format":
            raise Interrupted("SIGTERM")

    ran = []

    def stage(name):
        def run(_ctx):
            ran.append(name)
            return StageResult(name, Status.PASSED)
        return name, run

    ctx = GateContext(release=None, run_dir=tmp_path, home=tmp_path)  # type: ignore[arg-type]
    stages = [stage(n) for n in ("serve", "format", "evals")]
    results = run_stages(ctx, stages, checkpoint=checkpoint)
    assert ran == ["serve"]
    assert [(r.name, r.status) for r in results] == [
        ("serve", Status.PASSED), ("format", Status.INTERRUPTED), ("evals", Status.SKIPPED)]
    assert results[1].reasons == ["interrupted by SIGTERM"]
