"""Recorded production traffic (config/traffic.py): parsing, bad input naming file and line, skip_invalid,
duplicates, the deterministic (stratified) sample, and the demo traffic generator."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from pipeline.config.release import load_release
from pipeline.config.traffic import load_traffic, sample
from pipeline.demo import traffic as demo_traffic
from pipeline.errors import BadInput, ConfigError
from tests.support.paths import REPO

ASK = {"messages": [{"role": "user", "content": "Where is order NW-123456?"}], "max_tokens": 32}


def line(request: dict, **extra) -> str:
    return json.dumps({"request": request, **extra})


def write(path: Path, *lines: str) -> Path:
    path.write_text("".join(ln + "\n" for ln in lines), encoding="utf-8")
    return path


def bad(path: Path, skip: bool = False) -> str:
    with pytest.raises(BadInput) as exc:
        load_traffic(path, skip_invalid=skip)
    return exc.value.one_line()


def test_records_keep_what_is_replayed_and_production_answer(tmp_path):
    response = {"model": "chat@abc", "choices": [{"message": {"content": None, "tool_calls": [
        {"function": {"name": "lookup_order", "arguments": "{\"order_id\": \"NW-1\"}"}}]},
        "finish_reason": "tool_calls"}]}
    body = {**ASK, "model": "support", "stream": False, "user": "u1", "temperature": 0}
    t = load_traffic(write(tmp_path / "t.jsonl", line(body, response=response, tags={"client": "web"}),
                           json.dumps({**ASK, "stop": ["\n"]})))
    first, second = t.records
    assert first.params == {"max_tokens": 32, "temperature": 0}  # model, stream, user are not sent
    assert first.tags == {"client": "web"} and first.source == "t.jsonl:1"
    assert first.response is not None and first.response.served_name == "chat@abc"
    assert first.response.tool_calls == (("lookup_order", "{\"order_id\": \"NW-1\"}"),)
    assert second.response is None and second.params["stop"] == ["\n"]  # a bare request body
    assert first.key != second.key


@pytest.mark.parametrize(("text", "where", "words"), [
    ('{"request": {"messages": [', "line 2", "not JSON"),
    (line({"messages": [{"role": "robot", "content": "hi"}]}), "line 2 request.messages[0].role",
     "unknown role 'robot'"),
    (line({**ASK, "response_format": {"type": "json_schema", "json_schema": {"schema": {"type": "objekt"}}}}),
     "line 2 request.response_format.json_schema.schema", "is not a valid JSON Schema"),
    (line({**ASK, "tools": [{"type": "function", "function": {"name": "f", "parameters": {"required": "x"}}}]}),
     "line 2 request.tools[0].function.parameters", "is not a valid JSON Schema"),
    (line({**ASK, "response_format": {"type": "yaml"}}), "line 2 request.response_format.type", "must be one of"),
    (line({**ASK, "tool_choice": {"type": "function", "function": {"name": "nope"}}}),
     "line 2 request.tool_choice.function.name", "names no declared tool: 'nope'"),
    (line({**ASK, "tool_choice": "always"}), "line 2 request.tool_choice", "none, auto, required or a named"),
    (line({"messages": []}), "line 2 request.messages", "non-empty list"),
    (line({**ASK, "max_tokens": 0}), "line 2 request.max_tokens", "positive integer"),
    ("[1, 2]", "line 2", "must be a JSON object"),
    (json.dumps({"request": ASK, "answer": "x"}), "line 2", "unknown key(s) 'answer'"),
])
def test_a_malformed_line_is_bad_input_naming_file_and_line(tmp_path, text, where, words):
    path = write(tmp_path / "t.jsonl", line(ASK), text)
    message = bad(path)
    assert message.startswith(f"{path}: {where}: "), message
    assert words in message


def test_an_empty_file_or_directory_or_missing_path_is_bad_input(tmp_path):
    assert "empty replay traffic file" in bad(write(tmp_path / "e.jsonl", "", "  "))
    (tmp_path / "d").mkdir()
    assert "no *.jsonl files" in bad(tmp_path / "d")
    assert "not found" in bad(tmp_path / "missing.jsonl")


def test_skip_invalid_counts_and_scrubs_the_bad_lines(tmp_path):
    path = write(tmp_path / "t.jsonl", line(ASK), '{"oops": "write to jane@example.com', line(ASK),
                 line({"messages": [{"role": "robot", "content": "x"}]}))
    t = load_traffic(path, skip_invalid=True)
    assert len(t.records) == 1 and t.duplicates == 1 and t.lines == 4
    assert [i.source for i in t.invalid] == ["t.jsonl:2", "t.jsonl:4"]
    assert "unknown role" in t.invalid[1].problem
    assert "jane@example.com" not in repr(t.invalid)
    with pytest.raises(BadInput, match="no valid recorded request"):
        load_traffic(write(tmp_path / "only_bad.jsonl", "nope"), skip_invalid=True)


def test_a_directory_is_read_in_name_order_and_duplicates_across_files_are_dropped(tmp_path):
    (tmp_path / "d").mkdir()
    write(tmp_path / "d" / "b.jsonl", line(ASK), line({**ASK, "max_tokens": 8}))
    write(tmp_path / "d" / "a.jsonl", line({**ASK, "max_tokens": 8}))
    write(tmp_path / "d" / "notes.txt", "not traffic")
    t = load_traffic(tmp_path / "d")
    assert [r.source for r in t.records] == ["a.jsonl:1", "b.jsonl:1"] and t.duplicates == 1


def test_the_sample_is_deterministic_and_strata_get_their_share():
    records = load_demo()
    a, b = sample(records, 40, 3), sample(records, 40, 3)
    assert [r.key for r in a] == [r.key for r in b] and len(a) == 40
    assert [r.key for r in sample(records, 40, 4)] != [r.key for r in a]
    assert sample(records, None, 0) == records and sample(records, 10_000, 0) == records
    strat = sample(records, 40, 3, "client")
    share = Counter(r.tags["client"] for r in strat)
    total = Counter(r.tags["client"] for r in records)
    assert sum(share.values()) == 40 and set(share) == set(total)
    for client, n in total.items():
        assert abs(share[client] - 40 * n / len(records)) <= 1, (share, total)
    tiny = sample(records, 3, 0, "client")  # fewer than the strata: still exactly 3
    assert len(tiny) == 3


def load_demo() -> list:
    return load_traffic(REPO / "traffic" / "demo.jsonl").records


def test_the_demo_traffic_file_is_the_generator_output_and_valid(tmp_path):
    committed = REPO / "traffic" / "demo.jsonl"
    fresh = demo_traffic.write(tmp_path / "demo.jsonl", demo_traffic.generate())
    assert fresh.read_bytes() == committed.read_bytes()  # regenerate: scripts/make_demo_traffic.py
    t = load_traffic(committed)
    assert t.lines == demo_traffic.COUNT and t.duplicates > 0 and not t.invalid
    kinds = Counter(r.tags["client"] for r in t.records)
    assert set(kinds) == {"web", "email-bot", "agent-assist", "triage"}
    text = committed.read_text()
    assert "@example.com" in text and "+1 415 555" in text and "4111 1111 1111 1111" in text


def test_the_demo_tool_calls_declare_strict_tools_whose_arguments_vllm_constrains():
    """vLLM 0.32 (hermes parser) constrains a named or required tool call's arguments to the tool's parameters
    only for a tool declared `strict: true`; without it they came back free-form and production failed
    replay/tool_call on every request (README, replay). The agent-assist client declares its tools strict."""
    from pipeline.checks.replay import judge
    from pipeline.config.traffic import Answer

    calls = [r for r in load_demo() if r.params.get("tools")]
    assert len(calls) > 30 and all(t["function"]["strict"] is True for r in calls for t in r.params["tools"])
    named = next(r for r in calls if isinstance(r.params["tool_choice"], dict)
                 and r.params["tool_choice"]["function"]["name"] == "lookup_order")
    assert named.response is not None and judge(named, named.response)["tool_call"].passed
    bare = judge(named, Answer("", (("lookup_order", '"NW-867589"'),), "stop"))["tool_call"]
    assert not bare.passed and "'NW-867589' is not of type 'object'" in (bare.reason or "")


def test_release_yaml_replay_section(tmp_path):
    from tests.support.releases import write_release

    path = write_release(tmp_path, gates={"replay": {"path": "t.jsonl", "sample": {"size": 5, "strata": "client"},
                                                     "pass_rate": {"margin": 0.2},
                                                     "checks": {"length": {"margin": 0.3, "floor": 0.5}},
                                                     "length_ratio": {"min": 0.25, "max": 4}}})
    gate = load_release(path).replay_gate
    assert gate.enabled and gate.size == 5 and gate.seed == 0 and gate.strata == "client"
    assert gate.threshold("stop").margin == 0.2 and gate.threshold("length").floor == 0.5
    assert (gate.length_min, gate.length_max) == (0.25, 4)
    assert not load_release(write_release(tmp_path, name="plain.yaml")).replay_gate.enabled
    with pytest.raises(ConfigError, match="gates.replay.checks: unknown key 'lenght'"):
        load_release(write_release(tmp_path, name="typo.yaml",
                                   gates={"replay": {"path": "t.jsonl", "checks": {"lenght": {}}}}))
    with pytest.raises(ConfigError, match="gates.replay.length_ratio: min 2 is above max 1"):
        load_release(write_release(tmp_path, name="ratio.yaml",
                                   gates={"replay": {"path": "t.jsonl", "length_ratio": {"min": 2, "max": 1}}}))


def test_the_repository_release_yaml_replays_the_demo_traffic():
    release = load_release(REPO / "release.yaml")
    gate = release.replay_gate
    assert gate.enabled and (release.root / gate.path) == REPO / "traffic" / "demo.jsonl"
    records = load_traffic(release.root / gate.path).records
    chosen = sample(records, gate.size, gate.seed, gate.strata)
    assert gate.size is not None and len(chosen) == gate.size < len(records)
    assert "--tool-call-parser" in release.serving.extra_args  # the agent-assist client's tool calls


def batch_input(custom_id: str, body: dict, url: str = "/v1/chat/completions") -> str:
    return json.dumps({"custom_id": custom_id, "method": "POST", "url": url, "body": body})


def batch_output(custom_id: str, content: str | None, status: int = 200) -> str:
    body = {"model": "chat@prod12345678", "choices": [{"index": 0, "finish_reason": "stop",
                                                        "message": {"role": "assistant", "content": content}}]}
    return json.dumps({"id": f"batch_req_{custom_id}", "custom_id": custom_id,
                       "response": {"status_code": status, "request_id": "r", "body": body if status == 200 else {
                           "error": {"message": "rate limited"}}}, "error": None})


def test_openai_batch_input_and_output_files_are_traffic_paired_by_custom_id(tmp_path):
    other = {"messages": [{"role": "user", "content": "And NW-654321?"}], "max_tokens": 16, "model": "gpt"}
    third = {"messages": [{"role": "user", "content": "Refund NW-111111"}]}
    inputs = write(tmp_path / "batch_input.jsonl", batch_input("a", ASK), batch_input("b", other),
                   batch_input("c", third))
    outputs = write(tmp_path / "batch_output.jsonl", batch_output("b", "It ships Monday."),
                    batch_output("a", "On its way."), batch_output("c", None, status=429))
    t = load_traffic(inputs, batch_output=outputs)
    by_source = {r.source: r for r in t.records}
    a, b, c = by_source["batch_input.jsonl:1"], by_source["batch_input.jsonl:2"], by_source["batch_input.jsonl:3"]
    assert a.body() == ASK and b.body() == {k: v for k, v in other.items() if k != "model"}  # as recorded lines
    assert a.response is not None and a.response.text == "On its way." and a.response.served_name == "chat@prod12345678"
    assert b.response is not None and b.response.text == "It ships Monday."
    assert c.response is None  # its batch request failed: production is asked in the gate
    # the same request as a recorded line has the same pairing key
    assert a.key == load_traffic(write(tmp_path / "t.jsonl", line(ASK))).records[0].key
    assert load_traffic(inputs).records[0].response is None  # no output file: every answer asked


def test_a_malformed_batch_line_is_bad_input_naming_its_file_line_and_path(tmp_path):
    embeddings = write(tmp_path / "in.jsonl", batch_input("a", {"input": "x"}, url="/v1/embeddings"))
    assert bad(embeddings).startswith(f"{embeddings}: line 1 url: only POST /v1/chat/completions batch requests")
    no_messages = write(tmp_path / "in2.jsonl", batch_input("a", {"max_tokens": 3}))
    assert bad(no_messages).startswith(f"{no_messages}: line 1 body.messages: ")
    outputs = write(tmp_path / "out.jsonl", batch_output("a", "ok"), "not json")
    with pytest.raises(BadInput) as exc:
        load_traffic(write(tmp_path / "in3.jsonl", batch_input("a", ASK)), batch_output=outputs)
    assert exc.value.one_line().startswith(f"{outputs}: line 2: not a batch output line")


@pytest.mark.parametrize("replay, path, words", [
    ({"source": "jsonl"}, "gates.replay.path", "required"),
    ({"source": "mlflow_traces"}, "gates.replay.traces", "required with source mlflow_traces"),
    ({"source": "mlflow_traces", "path": "t.jsonl", "traces": {"experiment": "e"}}, "gates.replay.source",
     "reads no files"),
    ({"source": "mlflow_traces", "traces": {"experiment": "e", "until": "last tuesday"}},
     "gates.replay.traces.until", "not an ISO 8601"),
])
def test_the_traffic_source_is_checked_with_the_configuration(tmp_path, replay, path, words):
    from tests.support.releases import write_release

    with pytest.raises(ConfigError) as exc:
        load_release(write_release(tmp_path, gates={"replay": replay}))
    assert exc.value.path == path and words in exc.value.one_line(), exc.value.one_line()
