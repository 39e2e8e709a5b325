"""The processes this test session started, read from /proc (not `ps`, whose `args` column may be cut to the
terminal width: a long venv path pushed the module name out of it once).

Every process the session starts inherits MODELGATE_TEST_SESSION (set when this module is imported): the
scanner looks only at processes that carry it, so another checkout's tests (or a developer's server) on the
same machine never count. Zombies (exited, not yet reaped: nothing runs, nothing is held) are left out.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

SESSION_VAR = "MODELGATE_TEST_SESSION"
SESSION = f"{os.getpid()}-{time.time_ns()}"
os.environ[SESSION_VAR] = SESSION

# vLLM's API server, and its engine core / workers, which retitle themselves `VLLM::EngineCore`, `VLLM::Worker`
VLLM_MARKS = ("vllm.entrypoints.openai.api_server", "VLLM::")


def scan(*, vllm: bool = False, **env: str) -> dict[int, str]:
    """pid -> command line of this session's live processes whose environment holds every NAME=value in `env`
    (e.g. MODELGATE_HOME=...); `vllm`: only vLLM's own processes. This process is never listed."""
    wanted = {f"{SESSION_VAR}={SESSION}".encode(), *(f"{k}={v}".encode() for k, v in env.items())}
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if not wanted <= set((entry / "environ").read_bytes().split(b"\0")):
                continue
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            args = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:  # exited while we looked, or not ours to read
            continue
        if state == "Z" or (vllm and not any(mark in args for mark in VLLM_MARKS)):
            continue
        found[int(entry.name)] = args
    return found


def alive(pid: int) -> bool:
    """The process exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def listed(found: dict[int, str], width: int | None = None) -> list[str]:
    """`pid command line` lines (cut to `width` characters), for asserts that show what was left."""
    return [f"{pid} {args[:width]}" for pid, args in sorted(found.items())]


_present_before_test: set[int] = set()


def remember_present_vllm() -> None:
    """vLLM processes that exist before a test (a module-scoped staging server) are not its leftovers."""
    _present_before_test.clear()
    _present_before_test.update(scan(vllm=True))


def vllm_processes(home: Path | str | None = None) -> list[str]:
    """vLLM processes started since the test began and still alive (there must be none after a gate);
    with `home`, only those of gates run with that MODELGATE_HOME."""
    env = {} if home is None else {"MODELGATE_HOME": str(home)}
    return listed({pid: a for pid, a in scan(vllm=True, **env).items() if pid not in _present_before_test})


def gate_processes(home: Path | str) -> list[str]:
    """Every live process of the gates run with MODELGATE_HOME=home: vLLM, lm-eval, the serving benchmark."""
    return listed(scan(MODELGATE_HOME=str(home)), width=200)
