"""The checks a recorded request implies about any answer to it (pure judging; nobody writes them by hand).

    json_schema    response_format json_schema: the output parses and validates against the schema
    json_object    response_format json_object: the output parses as a JSON object
    tool_call      tools (tool_choice not none): every tool call names a declared tool (the named one, when
                   tool_choice names one) and its arguments validate against its parameters schema; with
                   tool_choice required or named, there must be a call
    not_truncated  max_tokens: the answer was not cut at the limit (finish reason `length`)
    stop           stop sequences: none appears in the output
    non_empty      always: some text or a tool call
    length         output length relative to production's answer, within [min, max] (paired checks only)

Each returns pass/fail per answer; stages/replay.py pairs the candidate's with production's per request.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from pipeline.config.traffic import Answer, Recorded, declared_tools
from pipeline.util.jsonpath import json_path

LENGTH_SLACK = 16  # characters added to both lengths: two short answers are never "3x longer"


@dataclass(frozen=True)
class Outcome:
    passed: bool
    reason: str | None = None


def applicable(rec: Recorded) -> list[str]:
    """The checks `rec` implies, in REPLAY_CHECKS order (length is added by the pairing)."""
    p = rec.params
    kind = (p.get("response_format") or {}).get("type")
    out = []
    if kind == "json_schema":
        out.append("json_schema")
    if kind == "json_object":
        out.append("json_object")
    if p.get("tools") and p.get("tool_choice") != "none":
        out.append("tool_call")
    if p.get("max_tokens") or p.get("max_completion_tokens"):
        out.append("not_truncated")
    if p.get("stop"):
        out.append("stop")
    out.append("non_empty")
    return out


def _validate(instance: Any, schema: Any) -> str | None:
    from jsonschema.validators import validator_for

    error = next(iter(sorted(validator_for(schema)(schema).iter_errors(instance), key=lambda e: e.path)), None)
    return None if error is None else f"{error.message} at {json_path(error.absolute_path)}"


def _json(text: str) -> tuple[Any, str | None]:
    try:
        return json.loads(text), None
    except json.JSONDecodeError as exc:
        return None, f"not JSON: {exc.msg} at char {exc.pos}"


def check_json_schema(rec: Recorded, answer: Answer) -> Outcome:
    value, error = _json(answer.text)
    if error:
        return Outcome(False, error)
    problem = _validate(value, rec.params["response_format"]["json_schema"]["schema"])
    return Outcome(problem is None, problem and f"does not match the response_format schema: {problem}")


def check_json_object(rec: Recorded, answer: Answer) -> Outcome:
    value, error = _json(answer.text)
    if error:
        return Outcome(False, error)
    return Outcome(isinstance(value, dict), None if isinstance(value, dict) else
                   f"JSON {type(value).__name__}, not an object")


def check_tool_call(rec: Recorded, answer: Answer) -> Outcome:
    tools = declared_tools(rec.params)
    choice = rec.params.get("tool_choice")
    named = choice["function"]["name"] if isinstance(choice, dict) else None
    if not answer.tool_calls:
        if named or choice == "required":
            return Outcome(False, f"no tool call (tool_choice {named or choice})")
        return Outcome(True)
    for name, arguments in answer.tool_calls:
        if name not in tools or (named and name != named):
            return Outcome(False, f"called {name!r}, " + (f"not the named tool {named!r}" if named and name in tools
                                                          else f"not a declared tool ({', '.join(sorted(tools))})"))
        args, error = _json(arguments or "{}")
        if error:
            return Outcome(False, f"arguments of {name}: {error}")
        problem = _validate(args, tools[name])
        if problem:
            return Outcome(False, f"arguments of {name} do not match its parameters: {problem}")
    return Outcome(True)


def check_not_truncated(rec: Recorded, answer: Answer) -> Outcome:
    limit = rec.params.get("max_tokens") or rec.params.get("max_completion_tokens")
    if answer.finish_reason == "length":
        return Outcome(False, f"cut at max_tokens={limit} (finish reason length)")
    return Outcome(True)


def check_stop(rec: Recorded, answer: Answer) -> Outcome:
    stop = rec.params["stop"]
    hit = next((s for s in ([stop] if isinstance(stop, str) else stop) if s and s in answer.text), None)
    return Outcome(hit is None, hit and f"stop sequence {hit!r} in the output")


def check_non_empty(rec: Recorded, answer: Answer) -> Outcome:
    ok = bool(answer.text.strip() or answer.tool_calls)
    return Outcome(ok, None if ok else "empty output")


CHECKS = {"json_schema": check_json_schema, "json_object": check_json_object, "tool_call": check_tool_call,
          "not_truncated": check_not_truncated, "stop": check_stop, "non_empty": check_non_empty}


def judge(rec: Recorded, answer: Answer) -> dict[str, Outcome]:
    """Every applicable check on one answer; an error answer fails them all with its error."""
    if answer.error:
        return {name: Outcome(False, f"request failed: {answer.error}") for name in applicable(rec)}
    return {name: CHECKS[name](rec, answer) for name in applicable(rec)}


def check_length(candidate: Answer, production: Answer, lo: float, hi: float) -> Outcome:
    """The candidate's output length over production's (plus LENGTH_SLACK each) within [lo, hi]."""
    ratio = (candidate.size + LENGTH_SLACK) / (production.size + LENGTH_SLACK)
    if lo <= ratio <= hi:
        return Outcome(True)
    return Outcome(False, f"output {candidate.size} chars vs production's {production.size} (x{ratio:.2f}, "
                   f"allowed x{lo:g} to x{hi:g})")
