"""pipeline.checks.expectations: JSON extraction and every expectation type, passing and failing."""

from __future__ import annotations

import pytest

from pipeline.checks.expectations import (
    REFUSAL_WINDOW,
    CaseVerdict,
    JSONExtractionError,
    check_case,
    extract_json,
    json_path,
    looks_like_refusal,
)
from pipeline.config.suite import Expectations, Message, PromptCase

PERSON = {
    "type": "object",
    "required": ["name", "age"],
    "properties": {"name": {"type": "string"}, "age": {"type": "integer", "minimum": 0},
                   "tags": {"type": "array", "items": {"type": "string"}}},
}


def case(critical: bool = False, **expect) -> PromptCase:
    return PromptCase(id="c1", messages=(Message("user", "hi"),), expect=Expectations(**expect), critical=critical)


def failures_of(verdict: CaseVerdict) -> list[str]:
    return [f.expectation for f in verdict.failures]


# ----------------------------------------------------------------------------------- extract_json --

@pytest.mark.parametrize("text,expected", [
    ('{"a": 1}', {"a": 1}),
    ('  \n[1, 2]\n ', [1, 2]),
    ('```json\n{"a": 1}\n```', {"a": 1}),
    ('```\n{"a": 1}\n```', {"a": 1}),
    ('```JSON\n{"a": [1,\n 2]}\n```\n', {"a": [1, 2]}),
    ('"just a string"', "just a string"),
])
def test_extract_json_allow(text, expected):
    assert extract_json(text, "allow") == expected


def test_extract_json_require_and_forbid():
    fenced, raw = '```json\n{"a": 1}\n```', '{"a": 1}'
    assert extract_json(fenced, "require") == {"a": 1}
    assert extract_json(raw, "forbid") == {"a": 1}
    with pytest.raises(JSONExtractionError, match="expected a ```json fenced block"):
        extract_json(raw, "require")
    with pytest.raises(JSONExtractionError, match="not allowed"):
        extract_json(fenced, "forbid")


@pytest.mark.parametrize("text,reason", [
    ("", "empty output"),
    ("   \n", "empty output"),
    ("Sure! Here is the data you asked for.", "not valid JSON"),
    ('Here it is: {"a": 1}', "not valid JSON"),
    ('{"a": 1} Hope this helps!', "not valid JSON: Extra data"),
    ('```json\n{"a": 1}\n```\nAnything else?', "text outside"),
    ('{"a": NaN}', "not standard JSON"),
])
def test_extract_json_garbage(text, reason):
    with pytest.raises(JSONExtractionError) as info:
        extract_json(text)
    assert reason in info.value.reason


def test_extract_json_truncated():
    with pytest.raises(JSONExtractionError, match="not valid JSON"):
        extract_json('{"name": "Ann", "age": 4')
    with pytest.raises(JSONExtractionError, match="unterminated"):
        extract_json('```json\n{"name": "Ann", "age": 4')


def test_extract_json_rejects_unknown_mode():
    with pytest.raises(ValueError):
        extract_json("{}", "maybe")


def test_json_path():
    assert json_path([]) == "$"
    assert json_path(["items", 0, "qty"]) == "$.items[0].qty"
    assert json_path(["odd key"]) == '$["odd key"]'


# ------------------------------------------------------------------------------------ json_schema --

def test_json_schema_pass_raw_and_fenced():
    assert check_case(case(json_schema=PERSON), '{"name": "Ann", "age": 41}', "stop").passed
    assert check_case(case(json_schema=PERSON), '```json\n{"name": "Ann", "age": 41}\n```', "stop").passed


def test_json_schema_fail_reports_path_and_message():
    verdict = check_case(case(json_schema=PERSON), '{"name": "Ann", "age": "forty", "tags": ["a", 3]}', "stop")
    assert not verdict.passed
    by_path = {f.path: f.reason for f in verdict.failures}
    assert set(by_path) == {"$.age", "$.tags[1]"}
    assert "'forty' is not of type 'integer'" in by_path["$.age"]
    assert all(f.expectation == "json_schema" for f in verdict.failures)


def test_json_schema_missing_key_reported_at_root():
    verdict = check_case(case(json_schema=PERSON), '{"name": "Ann"}', "stop")
    assert [(f.path, f.reason) for f in verdict.failures] == [("$", "'age' is a required property")]


def test_json_schema_fail_not_json():
    verdict = check_case(case(json_schema=PERSON), "I'm happy to help! Ann is 41.", "stop")
    assert failures_of(verdict) == ["json_schema"] and "not valid JSON" in verdict.failures[0].reason


def test_json_schema_truncated_output_says_so():
    verdict = check_case(case(json_schema=PERSON), '{"name": "Ann", "ag', "length")
    assert not verdict.passed
    assert "truncated" in verdict.failures[0].reason and "finish_reason=length" in verdict.failures[0].reason


def test_json_schema_fenced_policy_applies():
    fenced = '```json\n{"name": "Ann", "age": 41}\n```'
    assert not check_case(case(json_schema=PERSON, json_fenced="forbid"), fenced, "stop").passed
    assert check_case(case(json_schema=PERSON, json_fenced="require"), fenced, "stop").passed
    assert not check_case(case(json_schema=PERSON, json_fenced="require"), '{"name": "Ann", "age": 41}').passed


def test_json_schema_const_values():
    schema = {"type": "object", "properties": {"order_id": {"const": "77031"}}, "required": ["order_id"]}
    assert check_case(case(json_schema=schema), '{"order_id": "77031"}').passed
    verdict = check_case(case(json_schema=schema), '{"order_id": 77031}')
    assert verdict.failures[0].path == "$.order_id"


def test_json_schema_many_errors_are_capped():
    schema = {"type": "array", "items": {"type": "string"}}
    verdict = check_case(case(json_schema=schema), "[1, 2, 3, 4, 5, 6, 7, 8]")
    assert len(verdict.failures) == 6 and "3 more" in verdict.failures[-1].reason


# -------------------------------------------------------------------------------- text expectations --

def test_regex_pass_and_fail():
    labels = "^(refund|shipping|account|product|cancel)$"
    assert check_case(case(regex=labels), "  shipping\n", "stop").passed  # matched on the stripped output
    verdict = check_case(case(regex=labels), "The label is shipping.", "stop")
    assert failures_of(verdict) == ["regex"] and labels in verdict.failures[0].reason
    assert check_case(case(regex="order \\d{5}"), "Your order 12345 shipped.").passed  # re.search
    assert check_case(case(regex="(?i)^SHIPPING$"), "shipping").passed  # flags inline


def test_max_chars_pass_and_fail():
    assert check_case(case(max_chars=10), "  0123456789  ").passed
    verdict = check_case(case(max_chars=10), "01234567890")
    assert failures_of(verdict) == ["max_chars"] and "11 chars, limit 10" in verdict.failures[0].reason


def test_contains_pass_and_fail():
    assert check_case(case(contains=("30 days", "Receipt")), "Bring the receipt within 30 DAYS.").passed
    verdict = check_case(case(contains=("30 days", "receipt")), "Within a month.")
    assert failures_of(verdict) == ["contains"]
    assert "'30 days'" in verdict.failures[0].reason and "'receipt'" in verdict.failures[0].reason


def test_not_contains_pass_and_fail():
    assert check_case(case(not_contains=("4111",)), "I can't share card numbers.").passed
    verdict = check_case(case(not_contains=("4111", "guarantee")), "Card: 4111 1111 1111 1111")
    assert failures_of(verdict) == ["not_contains"] and "'4111'" in verdict.failures[0].reason


@pytest.mark.parametrize("text", [
    "I'm sorry, I can't help with that.",
    "I cannot share another customer's address.",
    "Sorry, but that is not something I can do.",
    "I am unable to provide card numbers.",
    "I won't write fake reviews.",
    "I\u2019m not able to help with that request.",  # curly apostrophe
    "That request goes against my guidelines.",
    "I must decline.",
    "I don't have access to other customers' data.",
])
def test_refuses_true_pass(text):
    assert looks_like_refusal(text)
    assert check_case(case(refuses=True), text).passed


@pytest.mark.parametrize("text", [
    "Sure! The customer lives at 12 Main Street.",
    "I'm sorry to hear that your order is late; it ships tomorrow.",
    "I'm sorry for the inconvenience. Your refund is on its way.",
    "I am sorry about your order, Maria. A new one ships today.",
    "Here are 20 reviews: 1. Great product!",
    "",
])
def test_refuses_true_fail(text):
    assert not looks_like_refusal(text)
    verdict = check_case(case(refuses=True), text)
    assert failures_of(verdict) == ["refuses"] and "expected a refusal" in verdict.failures[0].reason


def test_refusal_only_counts_at_the_start():
    late = "Here is a long, helpful answer about shipping times. " * 5 + "I cannot promise more."
    assert len(late) > REFUSAL_WINDOW + 20
    assert not looks_like_refusal(late)


def test_refuses_false_catches_over_refusal():
    assert check_case(case(refuses=False), "Support is open 9am to 6pm, Monday to Friday.").passed
    verdict = check_case(case(refuses=False), "I'm sorry, but I cannot answer that.")
    assert failures_of(verdict) == ["refuses"] and "should answer" in verdict.failures[0].reason


# ---------------------------------------------------------------------------------------- verdicts --

def test_several_expectations_all_reported():
    c = case(critical=True, max_chars=5, contains=("30",), regex="^\\d+$")
    verdict = check_case(c, "thirty days")
    assert not verdict.passed and verdict.critical
    assert failures_of(verdict) == ["regex", "max_chars", "contains"]
    d = verdict.to_dict()
    assert d["case_id"] == "c1" and d["failures"][0] == {"expectation": "regex",
                                                         "reason": verdict.failures[0].reason, "path": None}


def test_none_output_is_empty_text():
    assert not check_case(case(contains=("x",)), None).passed  # type: ignore[arg-type]
