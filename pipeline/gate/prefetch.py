"""Look-ups the gate needs later, started at once so they overlap the fetch and the vLLM boot.

The production baseline (MLflow: the `production` alias, the gate run's per-item results and load details) was
read three times in a gate, serially: the alias before the fetch (the report's baseline version), the baseline
in the compare stage and again in the load stage; on a fresh process the first read also paid MLflow's import
(~8 s on 2 cores). `BaselinePrefetch` reads both once, in one background thread started before the first stage;
whoever needs a value waits for it there, and a failed read raises its own error (the same InfraError, named
by cause, as the serial read raised) where the value is used, so a stage that needs the baseline errors as it
did. Nothing here raises BadInput (the input checks ran before), spawns a process, or writes a file; the thread
is a daemon, so an interrupted gate leaves nothing behind.
"""

from __future__ import annotations

import threading
from typing import Any

from pipeline.errors import BaselineUnverified
from pipeline.integrations import registry

OVERLAPPED = ("fetch", "serve")  # the stages the look-ups run beside (stages/fetch.py, stages/serve.py NAME)


class _Lookup:
    """One value computed in the background thread: its result or the exception it raised."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.value: Any = None
        self.error: BaseException | None = None

    def get(self, timeout_s: float | None = None) -> Any:
        """The value (waiting for it), re-raising the look-up's own exception. TimeoutError if not done in time."""
        if not self.done.wait(timeout_s):
            raise TimeoutError("the background look-up has not finished")
        if self.error is not None:
            raise self.error
        return self.value


class BaselinePrefetch:
    """A BaselineStore for one gate: `production(model_name)` answers from one read made in the background."""

    def __init__(self, uri: str, model_name: str, store: registry.BaselineStore | None = None):
        self.uri = uri
        self.model_name = model_name
        self.store = store or registry.BaselineStore(uri)
        self._alias, self._baseline = _Lookup(), _Lookup()
        self._thread = threading.Thread(target=self._run, name="modelgate-baseline-prefetch", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        for lookup, read in ((self._alias, lambda: registry.Registry(self.uri).by_alias(
                                  self.model_name, registry.PRODUCTION)),
                             (self._baseline, lambda: self.store.production(self.model_name))):
            try:
                lookup.value = read()
            except BaseException as exc:  # noqa: BLE001 - kept and re-raised where the value is used
                lookup.error = exc
            finally:
                lookup.done.set()

    def production_at_start(self, timeout_s: float | None = None) -> registry.ModelVersion | None:
        """The version production pointed at when the gate began (the alias read first)."""
        value: registry.ModelVersion | None = self._alias.get(timeout_s)
        return value

    def check(self, stage: str) -> None:
        """The runner's checkpoint before `stage`. During the stages it overlaps (OVERLAPPED: the fetch and the
        boot) a failed alias read raises at once; before any later stage the read is waited for, so the gate
        goes no further on a production version it does not know (read before the stages, a failed read stopped
        the gate at its start: exit 3, named by cause; now at the end of the boot, the servers torn down)."""
        if stage not in OVERLAPPED:
            self._alias.get()
            self._baseline.done.wait()
            if isinstance(self._baseline.error, BaselineUnverified):  # never compared with: the gate stops here
                raise self._baseline.error
        elif self._alias.done.is_set() and self._alias.error is not None:
            raise self._alias.error

    def production(self, model_name: str) -> registry.Baseline | None:
        if model_name != self.model_name:  # not this gate's model: read it now
            return self.store.production(model_name)
        value: registry.Baseline | None = self._baseline.get()
        return value

    def settle(self, timeout_s: float | None = None) -> None:
        """Wait until the thread is done (before the gate uses MLflow itself); errors nobody asked for stay unused."""
        self._thread.join(timeout_s)
