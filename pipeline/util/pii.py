"""Personal data and secrets in recorded production traffic never leave the runner.

`scrub(text)` replaces emails, phone numbers, payment card numbers (13 to 19 digits) and token-like secrets with
`[email]`, `[phone]`, `[card]`, `[secret]`; every excerpt the replay gate stores or shows goes through it.
`found(text)` lists the exact values it would replace: the replay stage registers those of the raw requests
(and answers) as secret values (util/secrets.py), so `redact` also removes them from every file of the run
directory (server logs included) before anything is uploaded.
"""

from __future__ import annotations

import re

EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
CARD = re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d-])")
PHONE = re.compile(r"(?<![\w+-])(?:\+|00)?\d[\d ().-]{6,}\d(?!\w)")
SECRET = re.compile(
    r"\b(?:sk-[A-Za-z0-9_-]{16,}|gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,}|AKIA[0-9A-Z]{16}"
    r"|xox[abprs]-[A-Za-z0-9-]{10,}|eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,})"
    r"|(?i:bearer)\s+[A-Za-z0-9._~+/-]{12,}=*"
    r"|(?i:(?:password|passwd|api[_-]?key|secret|token)\s*[:=]\s*)\S{6,}"
    r"|\b(?=[A-Za-z0-9_-]*\d)(?=[A-Za-z0-9_-]*[A-Za-z])[A-Za-z0-9_-]{32,}\b")
PHONE_DIGITS = (9, 15)


def _is_card(match: str) -> bool:
    """13 to 19 digits (a mistyped card number, failing its Luhn check, is still one)."""
    return 13 <= len(re.sub(r"\D", "", match)) <= 19


def _is_phone(match: str) -> bool:
    digits = re.sub(r"\D", "", match)
    return PHONE_DIGITS[0] <= len(digits) <= PHONE_DIGITS[1]


def _spans(text: str) -> list[tuple[int, int, str]]:
    """(start, end, label) of every value to replace, earlier kinds first where they overlap."""
    spans: list[tuple[int, int, str]] = []

    def free(a: int, b: int) -> bool:
        return all(b <= s or a >= e for s, e, _ in spans)

    for pattern, label, accept in ((SECRET, "secret", None), (EMAIL, "email", None), (CARD, "card", _is_card),
                                   (PHONE, "phone", _is_phone)):
        for m in pattern.finditer(text):
            if (accept is None or accept(m.group())) and free(m.start(), m.end()):
                spans.append((m.start(), m.end(), label))
    return sorted(spans)


def scrub(text: str) -> str:
    """`text` with every email, phone number, card number and token-like secret replaced by its kind."""
    out, pos = [], 0
    for start, end, label in _spans(text):
        out += [text[pos:start], f"[{label}]"]
        pos = end
    return "".join(out) + text[pos:]


def found(text: str) -> set[str]:
    """The exact values `scrub` replaces in `text`."""
    return {text[s:e] for s, e, _ in _spans(text)}
