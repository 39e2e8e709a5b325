"""Every error modelgate raises on purpose, and the exit code each maps to.

    ModelgateError                 base; never raised itself
    ├── BadInput          (2)      the user's input is wrong: config, pin, suite, evalset, CLI args
    │   ├── ConfigError            release.yaml (or another YAML/JSON input) fails validation
    │   ├── PinError               a pin is not an exact commit, or the repo/revision does not exist
    │   ├── DigestMismatch         a fetched file's sha256 differs from the lock (or a file is missing/extra)
    │   └── UnsafeModel            pickle weights or remote code without explicit permission
    ├── InfraError        (3)      something outside the input broke: server died, tracking store down, disk
    │   ├── ServerError            the vLLM server failed to start or died; carries the log tail
    │   │   └── StartupError       it exited or timed out during start-up (serve decides whose fault)
    │   └── GitHubError            the GitHub API kept failing (after bounded retries)
    ├── Refused           (5)      the release policy says no: not a release manager, self-approval, missing
    │                              approval, gate failed or stale, version tags tampered with, a rollback
    │                              path whose weights cannot be fetched and verified (releasing/readiness.py)
    ├── Conflict          (6)      another promotion or rollback of the same model is in progress
    ├── BaselineUnverified (7)     production's baseline does not verify (alias, signature, items.json or
    │                              report.json not as its release gate signed them): the gate stops unjudged
    └── Interrupted     (130)      SIGINT / SIGTERM

Exit codes that are not errors: 0 the gate passed, 1 the gate rejected the candidate, 4 inconclusive
(a release manager must decide). Third-party exceptions are mapped at the boundary with
``raise X(...) from exc`` so the CLI's single handler can turn them into one line and an exit code.
"""

from __future__ import annotations

EXIT_PASSED = 0
EXIT_REJECTED = 1
EXIT_BAD_INPUT = 2
EXIT_INFRA = 3
EXIT_INCONCLUSIVE = 4
EXIT_REFUSED = 5
EXIT_CONFLICT = 6
EXIT_BASELINE_UNVERIFIED = 7
EXIT_INTERRUPTED = 130


class ModelgateError(Exception):
    exit_code = EXIT_INFRA

    def one_line(self) -> str:
        return " ".join(str(self).split()) or type(self).__name__


class BadInput(ModelgateError):
    """Bad input. ``where`` is 'file: path.inside.it' when known."""

    exit_code = EXIT_BAD_INPUT

    def __init__(self, message: str, *, file: str | None = None, path: str | None = None):
        self.file = file
        self.path = path
        self.message = message
        where = ""
        if file and path:
            where = f"{file}: {path}: "
        elif file:
            where = f"{file}: "
        elif path:
            where = f"{path}: "
        super().__init__(where + message)


class ConfigError(BadInput):
    pass


class PinError(BadInput):
    pass


class DigestMismatch(BadInput):
    pass


class UnsafeModel(BadInput):
    pass


class InfraError(ModelgateError):
    exit_code = EXIT_INFRA


class ServerError(InfraError):
    """The model server failed. ``log_tail`` holds its last log lines for the report."""

    def __init__(self, message: str, *, log_tail: str = "", log_file: str | None = None):
        self.log_tail = log_tail
        self.log_file = log_file
        super().__init__(message)


class StartupError(ServerError):
    """vLLM exited (``returncode``) or never became healthy (``timed_out``) during start-up. The serve stage
    reads the log to decide whether the environment or the candidate is at fault (serving/startup.py)."""

    def __init__(self, message: str, *, log_tail: str = "", log_file: str | None = None,
                 returncode: int | None = None, timed_out: bool = False):
        self.returncode = returncode
        self.timed_out = timed_out
        super().__init__(message, log_tail=log_tail, log_file=log_file)


class GitHubError(InfraError):
    """A GitHub API call failed (after bounded retries when retrying made sense). ``status`` is GitHub's
    HTTP status (None for a timeout or a refused connection); ``attempts`` how many requests were made."""

    def __init__(self, message: str, *, status: int | None = None, attempts: int = 1):
        self.status = status
        self.attempts = attempts
        super().__init__(message)


class Refused(ModelgateError):
    """A promotion, approval or rollback the release policy does not allow; nothing was changed."""

    exit_code = EXIT_REFUSED


class Conflict(ModelgateError):
    """Another release operation on the same model holds the claim; nothing was changed."""

    exit_code = EXIT_CONFLICT


class BaselineUnverified(ModelgateError):
    """The production baseline a gate would compare with does not verify (releasing/chain.py); nothing judged."""

    exit_code = EXIT_BASELINE_UNVERIFIED


class Interrupted(ModelgateError):
    exit_code = EXIT_INTERRUPTED

    def __init__(self, signal_name: str = "SIGINT"):
        self.signal_name = signal_name
        super().__init__(f"interrupted by {signal_name}")
