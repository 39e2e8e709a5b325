"""Where production's answers come from in the replay stage (stages/replay.production_answers): recorded by the
current production version (its served name), asked in the gate otherwise, or the candidate's own when
production is the candidate's revision; none without a production version."""

from __future__ import annotations

import dataclasses
import json
from types import SimpleNamespace

from pipeline.config.release import load_release
from pipeline.config.traffic import Answer, parse_line
from pipeline.gate.stages import replay
from tests.support.releases import write_release

PROD = "1111111111111111111111111111111111111111"


def record(i: int, served: str | None):
    response = {"model": served, "choices": [{"message": {"content": f"recorded {i}"}, "finish_reason": "stop"}]}
    line = {"request": {"messages": [{"role": "user", "content": f"question {i}"}]}}
    return parse_line(json.dumps({**line, "response": response} if served else line), f"t.jsonl:{i}")


def context(tmp_path, production_revision: str | None, gate_answers: dict | None = None):
    release = load_release(write_release(tmp_path))
    pin = dataclasses.replace(release.candidate, revision=production_revision or PROD)
    store = SimpleNamespace(production=lambda name: None if production_revision is None else
                            SimpleNamespace(version="3", pin=pin, replay_answers=gate_answers or {}))
    return SimpleNamespace(release=release, baseline_store=store)


def test_recorded_by_the_current_production_else_asked(tmp_path, monkeypatch):
    records = [record(1, "chat@" + PROD[:12]), record(2, "chat@000000000000"), record(3, None)]
    asked = []

    def ask_production(ctx, pin, recs, progress):
        asked.extend(r.source for r in recs)
        return {r.key: Answer("asked") for r in recs}

    monkeypatch.setattr(replay, "ask_production", ask_production)
    answers, origin, info = replay.production_answers(context(tmp_path, PROD), records, {}, lambda m: None)
    assert asked == ["t.jsonl:2", "t.jsonl:3"]
    assert [answers[r.key].text for r in records] == ["recorded 1", "asked", "asked"]
    assert [origin[r.key] for r in records] == ["recorded", "asked", "asked"]
    assert info == {"version": "3", "revision": PROD, "served_name": "chat@" + PROD[:12], "recorded": 1,
                    "from_gate": 0, "asked": 2, "asked_at": "staging", "why": "no gates.replay.production_endpoint"}


def test_what_productions_own_gate_answered_is_paired_and_only_the_rest_is_asked(tmp_path, monkeypatch):
    records = [record(1, "chat@" + PROD[:12]), record(2, "chat@000000000000"), record(3, None)]
    gate_answers = {records[1].key: replay.answer_record(Answer('{"a": 1}', (("lookup", '{"id": 2}'),), "stop"))}
    asked = []

    def ask_production(ctx, pin, recs, progress):
        asked.extend(r.source for r in recs)
        return {r.key: Answer("asked") for r in recs}

    monkeypatch.setattr(replay, "ask_production", ask_production)
    answers, origin, info = replay.production_answers(context(tmp_path, PROD, gate_answers), records, {},
                                                      lambda m: None)
    assert asked == ["t.jsonl:3"]  # only what neither the traffic nor production's gate answered
    assert origin[records[1].key] == "production's gate" and info["from_gate"] == 1 and info["asked"] == 1
    paired = answers[records[1].key]
    assert (paired.text, paired.tool_calls, paired.finish_reason) == ('{"a": 1}', (("lookup", '{"id": 2}'),), "stop")
    assert paired.served_name == "chat@" + PROD[:12]


def test_production_at_the_candidates_revision_is_not_booted_again(tmp_path, monkeypatch):
    ctx = context(tmp_path, None)
    ctx = context(tmp_path, ctx.release.candidate.revision)
    records = [record(1, "chat@000000000000")]
    monkeypatch.setattr(replay, "ask_production", lambda *a: (_ for _ in ()).throw(AssertionError("booted")))
    candidate = {records[0].key: Answer("the candidate's")}
    answers, origin, info = replay.production_answers(ctx, records, candidate, lambda m: None)
    assert answers == candidate and origin == {records[0].key: "asked"} and info and info["asked"] == 1


def test_no_production_version_means_no_pairing(tmp_path):
    answers, origin, info = replay.production_answers(context(tmp_path, None), [record(1, None)], {},
                                                      lambda m: None)
    assert (answers, origin, info) == ({}, {}, None)
