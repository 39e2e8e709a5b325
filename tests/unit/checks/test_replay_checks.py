"""The checks a recorded request implies (checks/replay.py) and the scrubbing of personal data (util/pii.py)."""

from __future__ import annotations

import json

import pytest

from pipeline.checks.replay import applicable, check_length, judge
from pipeline.config.traffic import Answer, parse_line
from pipeline.util import pii

SCHEMA = {"type": "object", "properties": {"order_id": {"type": "string", "pattern": "^NW-[0-9]{6}$"}},
          "required": ["order_id"], "additionalProperties": False}
TOOLS = [{"type": "function", "function": {"name": "lookup_order", "parameters": SCHEMA}},
         {"type": "function", "function": {"name": "check_stock", "parameters": {"type": "object"}}}]
USER = [{"role": "user", "content": "Where is NW-123456?"}]


def rec(**params):
    return parse_line(json.dumps({"request": {"messages": USER, **params}}), "t.jsonl:1")


def failed(record, answer: Answer) -> dict[str, str]:
    return {name: out.reason or "" for name, out in judge(record, answer).items() if not out.passed}


def test_each_request_implies_its_checks():
    assert applicable(rec()) == ["non_empty"]
    assert applicable(rec(response_format={"type": "json_schema", "json_schema": {"schema": SCHEMA}},
                          max_tokens=10, stop=["\n"])) == ["json_schema", "not_truncated", "stop", "non_empty"]
    assert applicable(rec(response_format={"type": "json_object"})) == ["json_object", "non_empty"]
    assert applicable(rec(tools=TOOLS)) == ["tool_call", "non_empty"]
    assert applicable(rec(tools=TOOLS, tool_choice="none")) == ["non_empty"]
    assert applicable(rec(max_completion_tokens=5)) == ["not_truncated", "non_empty"]


def test_json_schema_output_must_parse_and_validate():
    r = rec(response_format={"type": "json_schema", "json_schema": {"schema": SCHEMA}})
    assert failed(r, Answer('{"order_id": "NW-123456"}')) == {}
    assert "not JSON" in failed(r, Answer('{"order_id": "NW-1'))["json_schema"]
    reason = failed(r, Answer('{"order_id": "123"}'))["json_schema"]
    assert "does not match" in reason and "$.order_id" in reason


def test_json_object_output_must_be_an_object():
    r = rec(response_format={"type": "json_object"})
    assert failed(r, Answer('{"intent": "orders"}')) == {}
    assert failed(r, Answer("[1]"))["json_object"] == "JSON list, not an object"
    assert "not JSON" in failed(r, Answer("Sure! {"))["json_object"]


def test_tool_calls_must_name_a_declared_tool_with_valid_arguments():
    auto = rec(tools=TOOLS)
    assert failed(auto, Answer("I will look it up.")) == {}  # auto: answering in text is allowed
    assert failed(auto, Answer("", (("lookup_order", '{"order_id": "NW-123456"}'),))) == {}
    assert "not a declared tool" in failed(auto, Answer("", (("refund", "{}"),)))["tool_call"]
    assert "do not match its parameters" in failed(auto, Answer("", (("lookup_order", '{"id": 1}'),)))["tool_call"]
    assert "not JSON" in failed(auto, Answer("", (("lookup_order", "{"),)))["tool_call"]
    required = rec(tools=TOOLS, tool_choice="required")
    assert failed(required, Answer("Let me check."))["tool_call"] == "no tool call (tool_choice required)"
    named = rec(tools=TOOLS, tool_choice={"type": "function", "function": {"name": "lookup_order"}})
    assert "not the named tool 'lookup_order'" in failed(named, Answer("", (("check_stock", "{}"),)))["tool_call"]


def test_truncation_stop_and_empty_output():
    r = rec(max_tokens=16, stop=["\nCustomer:"])
    assert failed(r, Answer("Hello", finish_reason="stop")) == {}
    out = failed(r, Answer("Hello\nCustomer: and then", finish_reason="length"))
    assert out == {"not_truncated": "cut at max_tokens=16 (finish reason length)",
                   "stop": "stop sequence '\\nCustomer:' in the output"}
    assert failed(r, Answer("  \n"))["non_empty"] == "empty output"
    errored = failed(r, Answer("", error="HTTP 400: bad"))
    assert set(errored) == {"not_truncated", "stop", "non_empty"}
    assert all(v == "request failed: HTTP 400: bad" for v in errored.values())


def test_length_relative_to_production():
    prod = Answer("x" * 100)
    assert check_length(Answer("y" * 100), prod, 0.5, 2.0).passed
    assert check_length(Answer("y" * 60), prod, 0.5, 2.0).passed
    long = check_length(Answer("y" * 400), prod, 0.5, 2.0)
    assert not long.passed and "x3.59" in (long.reason or "")
    assert not check_length(Answer(""), prod, 0.5, 2.0).passed
    assert check_length(Answer("ok"), Answer("fine"), 0.5, 2.0).passed  # short answers: the slack decides


@pytest.mark.parametrize(("text", "kind"), [
    ("write to maria.k+orders@example.co.uk today", "email"),
    ("call +1 415 555 0134 please", "phone"),
    ("or (020) 7946-0958", "phone"),
    ("card 4111 1111 1111 1111 exp 12/27", "card"),
    ("card 5555-5555-5555-4444", "card"),
    ("key sk-proj-abcdefghijklmnop1234", "secret"),
    ("token ghp_abcdefghijklmnopqrstuvwx12", "secret"),
    ("Authorization: Bearer abcdef1234567890xyz", "secret"),
    ("password: hunter22!", "secret"),
    ("aws AKIAABCDEFGHIJKLMNOP", "secret"),
])
def test_scrub_replaces_personal_data_and_secrets(text, kind):
    out = pii.scrub(text)
    assert f"[{kind}]" in out
    assert not (pii.found(text) & set(out.split()))
    assert all(value not in out for value in pii.found(text))


def test_scrub_keeps_ordinary_text_and_numbers():
    text = "Order NW-123456 of 2024-05-01: 3 items, $19.99, size EU 42, tracking 1Z 999."
    assert pii.scrub(text) == text
    assert pii.scrub("paid with 4111 1111 1111 1112") == "paid with [card]"  # mistyped: still a card number
