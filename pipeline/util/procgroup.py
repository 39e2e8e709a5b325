"""Stopping a child that runs in its own process group (vLLM, lm-eval, the serving benchmark): a polite
signal to the whole group, then SIGKILL if it has not exited within the grace period, so no helper process
survives. One function for every child, whatever its first signal."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from typing import Any


def stop_group(proc: subprocess.Popen[Any], grace_s: float = 10.0, *, first: signal.Signals = signal.SIGINT,
               kill_wait_s: float | None = None, linger_s: float = 2.0) -> None:
    """Send `first` to the group led by `proc` (started with start_new_session: the group id is its pid) and
    wait up to `grace_s` for the leader; then SIGKILL and wait up to `kill_wait_s` (default `grace_s`).
    After the leader exits, members still alive for `linger_s` (at most `grace_s`) are SIGKILLed too: a
    member that ignores SIGINT (a shell's background job) would otherwise hold our files open."""
    steps = ((first, grace_s), (signal.SIGKILL, grace_s if kill_wait_s is None else kill_wait_s))
    for sig, wait in steps:
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue
        deadline = time.monotonic() + min(grace_s, linger_s)
        while _group_alive(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if not _group_alive(proc.pid):
            break
    proc.poll()


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
