"""At the end of a run, print the time each test module took (setup + call + teardown of its tests, module
fixtures included), slowest first, with the share of the run: where CI's minutes go. Summed from the test
reports, so that it also works under pytest-xdist (the controller runs no test but receives every report); there
the shares are of the wall time, on two workers."""

from __future__ import annotations

import time
from collections import defaultdict

import pytest

_SPENT: dict[str, float] = defaultdict(float)
_STARTED: dict[str, float] = {}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    _SPENT[report.nodeid.split("::")[0]] += report.duration


def pytest_sessionstart(session: pytest.Session) -> None:
    _STARTED["session"] = time.monotonic()


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:  # type: ignore[no-untyped-def]
    if not _SPENT:
        return
    total = time.monotonic() - _STARTED.get("session", time.monotonic())
    terminalreporter.section("time per test module (slowest first)")
    for module, spent in sorted(_SPENT.items(), key=lambda kv: -kv[1])[:30]:
        terminalreporter.write_line(f"{spent:8.1f} s  {100 * spent / max(total, 1e-9):5.1f}%  {module}")
    rest = sorted(_SPENT.values(), reverse=True)[30:]
    if rest:
        terminalreporter.write_line(f"{sum(rest):8.1f} s  in {len(rest)} other modules")
    terminalreporter.write_line(f"{total:8.1f} s  the whole session")
