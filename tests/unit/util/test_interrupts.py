"""SIGINT and SIGTERM reach the main thread while other threads are busy (pipeline/util/interrupts.py).

`os.kill(tid, sig)` with a worker thread's id sends a process-directed signal that Linux hands to that thread
first (it is the thread the kernel tries first; nothing here forces a choice Linux would not make on its own).
The control case shows the defect without the routing: CPython runs the handler only in the main thread, which
sleeps on. With the routing, the same signal ends the process at once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from pipeline.util.interrupts import INTERRUPTS, blocked_in

CHILD = textwrap.dedent("""
    import os, signal, subprocess, sys, threading, time
    from pipeline.util.interrupts import route_to_main_thread, unblock_in_child
    routed = sys.argv[1] == "routed"
    def stop(signum, frame):
        raise SystemExit(130)
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    if routed:
        route_to_main_thread()
    def busy():
        while True:
            pass
    children = []
    def spawn():
        children.append(subprocess.Popen(["sleep", "600"], preexec_fn=unblock_in_child))
        children.append(subprocess.Popen(["sleep", "600"]))
        threading.Event().wait()
    workers = [threading.Thread(target=busy, daemon=True), threading.Thread(target=spawn, daemon=True)]
    for w in workers:
        w.start()
    while len(children) < 2:
        time.sleep(0.01)
    print(os.getpid(), *(w.native_id for w in workers), *(c.pid for c in children), flush=True)
    try:
        time.sleep(600)  # one long wait: the main thread is in a system call, not between bytecodes
    finally:
        for c in children:
            c.kill()
""")


def start(mode: str) -> tuple[subprocess.Popen[str], list[int]]:
    proc = subprocess.Popen([sys.executable, "-c", CHILD, mode], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    ids = [int(x) for x in proc.stdout.readline().split()]
    time.sleep(0.5)  # the main thread goes from its print into the sleep (a signal before it is handled at once)
    return proc, ids


def outcome(proc: subprocess.Popen[str], timeout_s: float) -> int | str:
    try:
        return proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return "still running"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_without_the_routing_a_signal_given_to_a_busy_thread_leaves_the_main_thread_asleep(sig):
    proc, (_, busy, *_) = start("plain")
    os.kill(busy, sig)
    assert outcome(proc, timeout_s=3) == "still running"


@pytest.mark.parametrize("hint", ["busy", "waiting", "process"])
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_routed_a_signal_ends_the_sleeping_main_thread_whichever_thread_the_kernel_tries(sig, hint):
    proc, (pid, busy, waiting, *_) = start("routed")
    os.kill({"busy": busy, "waiting": waiting, "process": pid}[hint], sig)
    assert outcome(proc, timeout_s=20) == 130


def test_worker_threads_block_the_interrupts_and_children_they_start_do_not():
    proc, (pid, busy, waiting, unblocked_child, inheriting_child) = start("routed")
    try:
        assert blocked_in(pid, pid) == set()  # the main thread takes them
        assert blocked_in(pid, busy) == set(INTERRUPTS) and blocked_in(pid, waiting) == set(INTERRUPTS)
        assert blocked_in(unblocked_child) == set()  # started with unblock_in_child: SIGTERM stops it
        assert blocked_in(inheriting_child) == set(INTERRUPTS)  # the control: a child inherits its thread's mask
    finally:
        os.kill(pid, signal.SIGTERM)
        assert outcome(proc, timeout_s=20) == 130
