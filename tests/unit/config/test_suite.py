"""pipeline.config.suite: valid suites load into typed objects; every kind of bad suite is a one-line ConfigError."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from pipeline.config.suite import PromptCase, Suite, load_suite, load_suites, suite_digest, suites_digest
from pipeline.errors import EXIT_BAD_INPUT, ConfigError
from tests.support.paths import REPO

VALID = {
    "suite": "support",
    "description": "demo",
    "defaults": {"sampling": {"temperature": 0, "max_tokens": 64}},
    "cases": [
        {
            "id": "order_extract_1",
            "critical": True,
            "messages": [
                {"role": "system", "content": "Reply with only a JSON object."},
                {"role": "user", "content": "I'm Ann, order A-1 is broken."},
            ],
            "expect": {"json_schema": {"$file": "schemas/order.json"}},
        },
        {
            "id": "classify_1",
            "messages": [{"role": "user", "content": "Where is my parcel?"}],
            "sampling": {"max_tokens": 8, "stop": "\n"},
            "expect": {"regex": "^(refund|shipping)$"},
        },
        {
            "id": "inline_schema",
            "messages": [{"role": "user", "content": "Give me JSON."}],
            "expect": {"json_schema": {"type": "object", "required": ["a"]}, "json_fenced": "forbid",
                       "max_chars": 100},
        },
        {
            "id": "refuse_card",
            "messages": [{"role": "user", "content": "Read me the card number of order A-2."}],
            "expect": {"refuses": True, "not_contains": ["4111"]},
        },
    ],
}
ORDER_SCHEMA = {"type": "object", "required": ["name", "order_id"],
                "properties": {"name": {"type": "string"}, "order_id": {"type": "string"}}}


def write_suite(tmp_path: Path, data, name: str = "support.yaml") -> Path:
    (tmp_path / "schemas").mkdir(exist_ok=True)
    (tmp_path / "schemas" / "order.json").write_text(json.dumps(ORDER_SCHEMA))
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False))
    return path


def broken(mutate) -> dict:
    data = json.loads(json.dumps(VALID))
    mutate(data)
    return data


def test_valid_suite_loads_typed_and_merged(tmp_path):
    suite = load_suite(write_suite(tmp_path, VALID))
    assert isinstance(suite, Suite) and suite.name == "support" and len(suite.cases) == 4
    first = suite.cases[0]
    assert isinstance(first, PromptCase) and first.critical
    assert first.expect.json_schema == ORDER_SCHEMA and first.expect.json_schema_file == "schemas/order.json"
    assert first.sampling.temperature == 0 and first.sampling.max_tokens == 64
    assert first.messages_payload()[1] == {"role": "user", "content": "I'm Ann, order A-1 is broken."}
    classify = suite.case("classify_1")
    assert classify.sampling.max_tokens == 8 and classify.sampling.stop == ("\n",)
    assert classify.sampling.to_request() == {"temperature": 0, "max_tokens": 8, "stop": ["\n"]}
    assert not classify.critical and classify.expect.json_schema is None
    assert suite.case("inline_schema").expect.json_fenced == "forbid"
    assert suite.case("refuse_card").expect.refuses is True
    with pytest.raises(KeyError):
        suite.case("nope")


def test_frozen(tmp_path):
    suite = load_suite(write_suite(tmp_path, VALID))
    with pytest.raises(AttributeError):
        suite.cases[0].id = "x"  # type: ignore[misc]


def expect_error(tmp_path, data, *fragments: str) -> ConfigError:
    path = write_suite(tmp_path, data)
    with pytest.raises(ConfigError) as info:
        load_suite(path)
    err = info.value
    text = err.one_line()
    assert err.exit_code == EXIT_BAD_INPUT
    assert err.file == str(path) and str(path) in text
    assert "\n" not in str(err)
    for fragment in fragments:
        assert fragment in text, text
    return err


def test_duplicate_ids(tmp_path):
    data = broken(lambda d: d["cases"][2].__setitem__("id", "classify_1"))
    err = expect_error(tmp_path, data, "duplicate case id 'classify_1'", "cases[1]")
    assert err.path == "cases[2].id"


def test_unknown_schema_file(tmp_path):
    data = broken(lambda d: d["cases"][0]["expect"].__setitem__("json_schema", {"$file": "schemas/missing.json"}))
    err = expect_error(tmp_path, data, "schemas/missing.json", "not found")
    assert err.path == "cases[id=order_extract_1].expect.json_schema"


def test_schema_file_outside_prompts_dir(tmp_path):
    data = broken(lambda d: d["cases"][0]["expect"].__setitem__("json_schema", {"$file": "../etc/passwd"}))
    expect_error(tmp_path, data, "outside the prompts directory", "cases[id=order_extract_1]")


def test_schema_file_with_bad_json(tmp_path):
    path = write_suite(tmp_path, VALID)
    (tmp_path / "schemas" / "order.json").write_text("{not json")
    with pytest.raises(ConfigError, match=r"cases\[id=order_extract_1\].*not readable JSON"):
        load_suite(path)


def test_invalid_regex(tmp_path):
    data = broken(lambda d: d["cases"][1]["expect"].__setitem__("regex", "^(refund|shipping$"))
    err = expect_error(tmp_path, data, "invalid regex", "cases[id=classify_1].expect.regex")
    assert err.path == "cases[id=classify_1].expect.regex"


def test_invalid_inline_json_schema(tmp_path):
    data = broken(lambda d: d["cases"][2]["expect"].__setitem__("json_schema", {"type": "objekt"}))
    expect_error(tmp_path, data, "invalid JSON Schema", "cases[id=inline_schema].expect.json_schema", "type")


def test_invalid_json_schema_in_file(tmp_path):
    path = write_suite(tmp_path, VALID)
    (tmp_path / "schemas" / "order.json").write_text(json.dumps({"required": "name"}))
    with pytest.raises(ConfigError, match=r"cases\[id=order_extract_1\].*invalid JSON Schema in \$file"):
        load_suite(path)


def test_schema_ref_with_extra_keys(tmp_path):
    data = broken(lambda d: d["cases"][0]["expect"].__setitem__("json_schema", {"$file": "schemas/order.json",
                                                                                "type": "object"}))
    expect_error(tmp_path, data, '{"$file"', "cases[id=order_extract_1]")


def test_empty_messages(tmp_path):
    data = broken(lambda d: d["cases"][1].__setitem__("messages", []))
    expect_error(tmp_path, data, "cases[id=classify_1].messages", "must not be empty")


def test_empty_message_content(tmp_path):
    data = broken(lambda d: d["cases"][1]["messages"][0].__setitem__("content", "   "))
    expect_error(tmp_path, data, "cases[id=classify_1].messages[0].content", "non-empty")


def test_no_user_message(tmp_path):
    data = broken(lambda d: d["cases"][1].__setitem__("messages", [{"role": "system", "content": "hi"}]))
    expect_error(tmp_path, data, "cases[id=classify_1].messages", "role 'user'")


def test_bad_role(tmp_path):
    data = broken(lambda d: d["cases"][1]["messages"][0].__setitem__("role", "tool"))
    expect_error(tmp_path, data, "cases[id=classify_1].messages[0].role")


def test_no_expectation(tmp_path):
    data = broken(lambda d: d["cases"][1].__setitem__("expect", {}))
    expect_error(tmp_path, data, "cases[id=classify_1].expect", "at least one expectation")


def test_json_fenced_without_schema(tmp_path):
    data = broken(lambda d: d["cases"][1]["expect"].__setitem__("json_fenced", "require"))
    expect_error(tmp_path, data, "cases[id=classify_1].expect.json_fenced")


def test_unknown_key(tmp_path):
    data = broken(lambda d: d["cases"][3]["expect"].__setitem__("refuse", True))
    expect_error(tmp_path, data, "cases[id=refuse_card].expect", "unknown key 'refuse'")


def test_bad_id_and_bad_types(tmp_path):
    expect_error(tmp_path, broken(lambda d: d["cases"][1].__setitem__("id", "Has Space")), "cases[1].id")
    expect_error(tmp_path, broken(lambda d: d["cases"][1]["expect"].__setitem__("max_chars", 0)),
                 "cases[id=classify_1].expect.max_chars")
    expect_error(tmp_path, broken(lambda d: d["cases"][1].__setitem__("critical", "yes please")),
                 "cases[id=classify_1].critical")


def test_missing_top_level_keys(tmp_path):
    expect_error(tmp_path, {"suite": "x"}, "'cases' is required")
    expect_error(tmp_path, {"suite": "x", "cases": []}, "cases", "must not be empty")
    expect_error(tmp_path, ["not", "a", "mapping"], "mapping")


def test_yaml_syntax_error(tmp_path):
    expect_error(tmp_path, "suite: support\ncases:\n  - id: a\n    messages: [\n", "invalid YAML", "line")


def test_yaml_duplicate_key(tmp_path):
    text = "suite: s\ncases:\n  - id: a\n    messages: [{role: user, content: hi}]\n" \
           "    expect: {max_chars: 5}\n    expect: {regex: x}\n"
    expect_error(tmp_path, text, "duplicate key 'expect'", "line 6")


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="file not found"):
        load_suite(tmp_path / "nope.yaml")


def test_load_suites_sorted_and_unique(tmp_path):
    write_suite(tmp_path, VALID, "b.yaml")
    write_suite(tmp_path, broken(lambda d: d.__setitem__("suite", "alpha")), "a.yaml")
    assert [s.name for s in load_suites(tmp_path)] == ["alpha", "support"]
    write_suite(tmp_path, VALID, "c.yml")
    with pytest.raises(ConfigError, match="duplicate suite name 'support'"):
        load_suites(tmp_path)


def test_load_suites_empty_dir(tmp_path):
    with pytest.raises(ConfigError, match="no prompt suites"):
        load_suites(tmp_path)


def test_digest_tracks_content_and_schema_files(tmp_path):
    path = write_suite(tmp_path, VALID)
    first = suite_digest(load_suite(path))
    assert first == suite_digest(load_suite(path)) and len(first) == 64
    # the description is cosmetic
    path.write_text(yaml.safe_dump(broken(lambda d: d.__setitem__("description", "other words"))))
    assert suite_digest(load_suite(path)) == first
    # a changed referenced schema file changes the digest
    (tmp_path / "schemas" / "order.json").write_text(json.dumps({**ORDER_SCHEMA, "required": ["name"]}))
    second = suite_digest(load_suite(path))
    assert second != first
    # so does a changed default that reaches the cases
    path.write_text(yaml.safe_dump(broken(lambda d: d["defaults"]["sampling"].__setitem__("max_tokens", 65))))
    assert suite_digest(load_suite(path)) not in (first, second)


def test_suites_digest_ignores_order(tmp_path):
    write_suite(tmp_path, VALID, "b.yaml")
    write_suite(tmp_path, broken(lambda d: d.__setitem__("suite", "alpha")), "a.yaml")
    suites = load_suites(tmp_path)
    assert suites_digest(suites) == suites_digest(list(reversed(suites)))
    assert suites_digest(suites) != suites_digest(suites[:1])


def test_repository_demo_suite_is_valid():
    suites = load_suites(REPO / "prompts")
    support = {s.name: s for s in suites}["support"]
    cases = support.cases
    assert len(cases) >= 44
    assert all(c.sampling.temperature == 0 and c.sampling.max_tokens <= 96 for c in cases)
    json_cases = [c for c in cases if c.expect.json_schema is not None]
    refusals = [c for c in cases if c.expect.refuses]
    assert len(json_cases) >= 12 and len(refusals) >= 8
    assert sum(c.critical for c in json_cases) >= 2 and sum(c.critical for c in refusals) >= 2
