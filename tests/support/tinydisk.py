"""A 64 KiB filesystem for full-disk tests, with or without root.

`mount` mode (root or CAP_SYS_ADMIN): a real tmpfs mounted at the path for the test, filled here when asked.
`namespace` mode (any user where unprivileged user namespaces are allowed, as on Debian and Ubuntu): the child
under test runs in its own user and mount namespace (`unshare --user --map-root-user --mount`), where the same
tmpfs is mounted at the same path (and filled) just before the child's command is executed; outside the child
the path stays an ordinary directory. Both give the child the kernel's real ENOSPC, not a simulated one.
Where neither is possible the test fails under CI (CI=true) and is skipped elsewhere, naming why."""

from __future__ import annotations

import os
import shlex
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest

SIZE = "64k"
MODES = ("mount", "namespace")


@dataclass
class TinyDisk:
    path: Path
    mode: str
    full: bool = False
    _mounted: bool = field(default=False, repr=False)

    def wrap(self, cmd: list[str]) -> list[str]:
        """The child's command, run where this disk is mounted (namespace mode: inside its namespace)."""
        if self.mode == "mount":
            return cmd
        fill = f" && (dd if=/dev/zero of={shlex.quote(str(self.path / '.filler'))} bs=4k 2>/dev/null; true)" \
            if self.full else ""
        script = f"mount -t tmpfs -o size={SIZE} tmpfs {shlex.quote(str(self.path))}{fill} && exec \"$@\""
        return ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script, "tinydisk", *cmd]

    def unmount(self) -> None:
        if self._mounted:
            subprocess.run(["umount", "-l", str(self.path)], capture_output=True)


def unavailable(why: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"full-disk test cannot run here: {why}")
    pytest.skip(why)


def make(path: Path, mode: str, *, full: bool = False) -> TinyDisk:
    """A 64 KiB filesystem at `path` in `mode` (see the module doc); filled up when `full`."""
    path.mkdir(parents=True, exist_ok=True)
    disk = TinyDisk(path, mode, full)
    if mode == "mount":
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={SIZE}", "tmpfs", str(path)], capture_output=True,
                              text=True)
        if done.returncode != 0:
            pytest.skip(f"mount mode needs root or CAP_SYS_ADMIN ({done.stderr.strip()}); the namespace mode of "
                        "the same test runs instead")
        disk._mounted = True
        if full:
            fill(path)
    else:
        probe = subprocess.run(disk.wrap(["true"]), capture_output=True, text=True)
        if probe.returncode != 0:
            unavailable(f"unprivileged user namespaces are not allowed here ({probe.stderr.strip()})")
    return disk


def fill(mount: Path) -> None:
    fd = os.open(mount / ".filler", os.O_WRONLY | os.O_CREAT)
    try:
        while os.write(fd, b"\0" * 4096):
            pass
    except OSError as exc:
        assert exc.errno == 28, exc  # ENOSPC: full
    finally:
        os.close(fd)
