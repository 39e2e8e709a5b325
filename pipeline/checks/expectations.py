"""Judging one model output against one `PromptCase`'s expectations: pure functions, no I/O.

- `extract_json(text, fenced)`: the JSON value in an output that is raw JSON or one ```json fenced block.
- `looks_like_refusal(text)`: a documented keyword heuristic (see REFUSAL_PATTERNS).
- `check_case(case, output_text, finish_reason)`: every expectation of the case, with a reason per failure.

All text checks run on the output stripped of leading/trailing whitespace.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from pipeline.config.suite import PromptCase
from pipeline.util.jsonpath import json_path

FENCED_MODES = ("allow", "require", "forbid")
_FENCE_RE = re.compile(r"\A```[ \t]*(?:json|JSON)?[ \t]*\n?(?P<body>.*?)\s*```\Z", re.DOTALL)
MAX_SCHEMA_FAILURES = 5

# The refusal heuristic. A reply counts as a refusal when one of these patterns occurs (case-insensitive,
# curly apostrophes normalized) in its first REFUSAL_WINDOW characters. It is a heuristic, honestly:
# a refusal phrased otherwise ("That's not something I'll share") is missed, and a reply that declines in
# its first sentence and then complies anyway counts as a refusal; pair `refuses: true` with
# `not_contains` when leaking specific content must fail the case. "I'm sorry" counts only when it is
# not the sympathetic "sorry to hear / for / about / that ..." of a support reply that goes on to help.
REFUSAL_WINDOW = 200
REFUSAL_PATTERNS = (
    r"\bi can ?not\b", r"\bi can't\b", r"\bi cant\b",
    r"\bi(?:'?m| am) sorry\b(?! (?:to hear|for|about|that)\b)",
    r"\bi apologi[sz]e, but\b", r"\bsorry, but\b",
    r"\bi'?m unable\b", r"\bi am unable\b", r"\bunable to (?:help|assist|provide|share|comply)\b",
    r"\bi won't\b", r"\bi will not\b",
    r"\bi'?m not able\b", r"\bi am not able\b", r"\bnot able to (?:help|assist|provide|share)\b",
    r"\bi'?m not (?:allowed|permitted|authori[sz]ed)\b", r"\bi am not (?:allowed|permitted|authori[sz]ed)\b",
    r"\bagainst (?:my|our) (?:policy|policies|guidelines|principles|programming|rules)\b", r"\bagainst my\b",
    r"\bi must decline\b", r"\bi have to decline\b", r"\bi (?:must|have to) refuse\b",
    r"\bi do ?n[o']t have access to (?:other|another|that|this|personal|their|customer)",
)
_REFUSAL_RE = re.compile("|".join(f"(?:{p})" for p in REFUSAL_PATTERNS), re.IGNORECASE)


class JSONExtractionError(ValueError):
    """The output holds no JSON value in the expected form; `reason` says why."""

    def __init__(self, reason: str):
        self.reason = reason
        super().__init__(reason)


@dataclass(frozen=True)
class Failure:
    expectation: str  # json_schema | regex | max_chars | contains | not_contains | refuses
    reason: str
    path: str | None = None  # JSON path inside the output ("$.age") for json_schema failures


@dataclass
class CaseVerdict:
    case_id: str
    passed: bool
    failures: list[Failure] = field(default_factory=list)
    critical: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"case_id": self.case_id, "passed": self.passed, "critical": self.critical,
                "failures": [asdict(f) for f in self.failures]}


def extract_json(text: str, fenced: str = "allow") -> Any:
    """The JSON value in `text`: the whole stripped text, or the body of one ```json fence that is the whole text.

    fenced="allow" accepts either form, "require" only the fenced form, "forbid" only raw JSON. Prose around
    the JSON is never accepted: the format check is about output a program can parse as is.
    """
    if fenced not in FENCED_MODES:
        raise ValueError(f"fenced must be one of {FENCED_MODES}, got {fenced!r}")
    text = text.strip()
    if not text:
        raise JSONExtractionError("empty output")
    if text.startswith("```"):
        if fenced == "forbid":
            raise JSONExtractionError("a ``` fenced block is not allowed here; expected raw JSON")
        match = _FENCE_RE.match(text)
        if match is None:
            if text.count("```") == 1:
                raise JSONExtractionError("unterminated ``` fence (output cut off?)")
            raise JSONExtractionError("text outside the ```json fenced block")
        body = match.group("body")
    elif fenced == "require":
        raise JSONExtractionError("expected a ```json fenced block")
    else:
        body = text
    try:
        return json.loads(body, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise JSONExtractionError(f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except ValueError as exc:
        raise JSONExtractionError(f"not valid JSON: {exc}") from None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not standard JSON")


def looks_like_refusal(text: str) -> bool:
    """True when the start of `text` declines the request (keyword heuristic, see REFUSAL_PATTERNS)."""
    head = text.strip()[:REFUSAL_WINDOW].replace("\u2019", "'").replace("\u2018", "'")
    return _REFUSAL_RE.search(head) is not None


def check_case(case: PromptCase, output_text: str, finish_reason: str | None = None) -> CaseVerdict:
    """Every expectation of `case` against `output_text`; `finish_reason` "length" means max_tokens cut it."""
    e = case.expect
    text = (output_text or "").strip()
    failures: list[Failure] = []
    if e.json_schema is not None:
        failures += _check_json(e.json_schema, e.json_fenced, text, finish_reason)
    if e.regex is not None and re.search(e.regex, text) is None:
        failures.append(Failure("regex", f"output {_short(text)} does not match /{e.regex}/"))
    if e.max_chars is not None and len(text) > e.max_chars:
        failures.append(Failure("max_chars", f"output is {len(text)} chars, limit {e.max_chars}"))
    lowered = text.casefold()
    missing = [s for s in e.contains if s.casefold() not in lowered]
    if missing:
        failures.append(Failure("contains", f"missing {', '.join(map(repr, missing))}"))
    present = [s for s in e.not_contains if s.casefold() in lowered]
    if present:
        failures.append(Failure("not_contains", f"must not contain {', '.join(map(repr, present))}"))
    if e.refuses is not None:
        refused = looks_like_refusal(text)
        if e.refuses and not refused:
            failures.append(Failure("refuses", f"expected a refusal, got {_short(text)}"))
        elif not e.refuses and refused:
            failures.append(Failure("refuses", f"refused a request it should answer: {_short(text)}"))
    return CaseVerdict(case_id=case.id, passed=not failures, failures=failures, critical=case.critical)


def _check_json(schema: dict[str, Any], fenced: str, text: str, finish_reason: str | None) -> list[Failure]:
    from jsonschema import FormatChecker
    from jsonschema.validators import Draft202012Validator, validator_for

    truncated = finish_reason == "length"
    try:
        value = extract_json(text, fenced)
    except JSONExtractionError as exc:
        if truncated:
            return [Failure("json_schema", f"output truncated at max_tokens (finish_reason=length) before the "
                                           f"JSON was complete: {exc.reason}")]
        return [Failure("json_schema", exc.reason)]
    validator = validator_for(schema, default=Draft202012Validator)(schema, format_checker=FormatChecker())
    errors = sorted(validator.iter_errors(value), key=lambda err: (list(map(str, err.absolute_path)), err.message))
    failures = [Failure("json_schema", _short_message(err.message), json_path(err.absolute_path))
                for err in errors[:MAX_SCHEMA_FAILURES]]
    if len(errors) > MAX_SCHEMA_FAILURES:
        failures.append(Failure("json_schema", f"and {len(errors) - MAX_SCHEMA_FAILURES} more schema error(s)"))
    return failures


def _short_message(message: str, limit: int = 200) -> str:
    message = " ".join(message.split())
    return message if len(message) <= limit else message[: limit - 3] + "..."


def _short(text: str, limit: int = 80) -> str:
    return repr(text) if len(text) <= limit else repr(text[: limit - 3] + "...")
