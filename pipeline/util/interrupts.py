"""SIGINT and SIGTERM reach the main thread, whatever the other threads are doing.

CPython runs a signal's Python handler only in the main thread, and only when that thread is between bytecodes
or interrupted in a system call. The kernel hands a process-directed signal to any thread that does not block
it; when it lands on a worker thread (a busy hashing or HTTP thread), the main thread is not interrupted: if it
is blocked in a long wait (a sleep, a child's `wait()`, a future's result), the handler, and with it the gate's
teardown, waits until that wait ends (reproduced in tests/unit/util/test_interrupts.py: a gate asleep for 600 s
with a busy thread beside it ignored the SIGTERM that the kernel gave that thread).

`route_to_main_thread()` blocks both signals in every thread started through `threading` from then on (a
profile hook that runs first in each new thread, then removes itself), so the kernel can only deliver them to
the main thread. A child process inherits its parent thread's mask: `unblock_in_child` is the `preexec_fn`
(or part of it) of every child the pipeline starts, so a child started from a worker thread can still be
stopped with SIGINT or SIGTERM."""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

INTERRUPTS = frozenset({signal.SIGINT, signal.SIGTERM})


def _block_in_this_thread(frame: FrameType, event: str, arg: Any) -> None:
    signal.pthread_sigmask(signal.SIG_BLOCK, INTERRUPTS)
    sys.setprofile(None)  # once per thread: the hook is not a profiler


def route_to_main_thread() -> Callable[[], None]:
    """From now on, threads started through `threading` block SIGINT and SIGTERM. Returns the undo (threads
    already started keep their mask). Call it from the main thread before the work starts its threads."""
    previous = threading.getprofile()
    threading.setprofile(_block_in_this_thread)

    def undo() -> None:
        threading.setprofile(previous)

    return undo


def unblock_in_child() -> None:
    """For a child process, between fork and exec: SIGINT and SIGTERM are delivered again, whichever thread
    started it."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, INTERRUPTS)


def blocked_in(pid: int, tid: int | None = None) -> set[signal.Signals]:
    """The interrupts that a process (or one of its threads) blocks, read from /proc (Linux)."""
    path = f"/proc/{pid}/task/{tid}/status" if tid is not None else f"/proc/{pid}/status"
    with open(path) as status:
        mask = next(int(line.split()[1], 16) for line in status if line.startswith("SigBlk:"))
    return {s for s in INTERRUPTS if mask & (1 << (s - 1))}
