"""Production's traffic from its traces in the tracking server (gates.replay.source: mlflow_traces).

A team that instruments its production client with MLflow tracing (`mlflow.openai.autolog()`, or spans of its
own) already has its requests in the tracking server. Each trace of the experiment that started within the
window is read; its chat-completion span, the first span (root first) whose inputs hold a `messages` list and
whose outputs are a completion (`choices`), is one recorded request: the inputs are the request body (what
config/traffic.py replays of it), the outputs production's answer (its `model`, the served name). A trace with
no such span (a retrieval, a tool call) is not a request and is counted, never an error; a malformed chat span
is bad input naming the trace, or counted with `skip_invalid`, exactly as a malformed line of a traffic file.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from typing import Any

from pipeline.config.gates import ReplayTraces
from pipeline.config.keys import instant
from pipeline.config.traffic import Line, Traffic, collect
from pipeline.errors import BadInput, InfraError

WHERE = "gates.replay.traces"
PAGE = 200


def chat_span(trace: Any) -> tuple[dict[str, Any], Any] | None:
    """(request body, completion) of the trace's chat-completion span, root first; None when it has none."""
    spans = sorted(trace.data.spans, key=lambda s: (s.parent_id is not None, s.start_time_ns))
    for span in spans:
        inputs, outputs = span.inputs, span.outputs
        if isinstance(inputs, dict) and isinstance(inputs.get("messages"), list) \
                and isinstance(outputs, dict) and "choices" in outputs:
            return inputs, outputs
    return None


def load_trace_traffic(uri: str, cfg: ReplayTraces, *, skip_invalid: bool, file: str,
                       now: dt.datetime | None = None) -> tuple[Traffic, int]:
    """(the recorded requests of the window's traces, how many traces held no chat span)."""
    import mlflow
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    until = instant(cfg.until, True, file, f"{WHERE}.until") if cfg.until is not None else \
        (now or dt.datetime.now(dt.UTC))
    since = until - dt.timedelta(hours=cfg.window_hours)
    client = MlflowClient(tracking_uri=uri)
    try:
        experiment = client.get_experiment_by_name(cfg.experiment)
    except MlflowException as exc:
        raise InfraError(f"cannot read the experiment {cfg.experiment!r} of production's traces: {exc}") from exc
    if experiment is None:
        raise BadInput(f"no experiment {cfg.experiment!r} in the tracking server (production's traces)", file=file,
                       path=f"{WHERE}.experiment")
    window = (f"trace.timestamp_ms >= {int(since.timestamp() * 1000)} AND "
              f"trace.timestamp_ms <= {int(until.timestamp() * 1000)}")
    not_chat = 0

    def lines() -> Iterator[Line]:
        nonlocal not_chat
        token, read = None, 0
        while read < cfg.max_traces:
            try:
                page = client.search_traces(locations=[experiment.experiment_id], filter_string=window,
                                            max_results=min(PAGE, cfg.max_traces - read),
                                            order_by=["timestamp_ms DESC"], page_token=token)
            except MlflowException as exc:
                raise InfraError(f"cannot search the traces of {cfg.experiment!r}: {exc}") from exc
            for trace in page:
                read += 1
                found = chat_span(trace)
                if found is None:
                    not_chat += 1
                    continue
                inputs, outputs = found
                trace_id = trace.info.trace_id
                yield Line(json.dumps({"request": inputs, "response": outputs}, default=str), f"trace {trace_id}",
                           file, f"{WHERE} trace {trace_id}")
            token = page.token
            if not token:
                break

    # a trace's spans are downloaded from the artifact store of the global tracking URI: this store's, meanwhile
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        traffic = collect(lines(), skip_invalid=skip_invalid, what=f"the traces of {cfg.experiment!r} from "
                          f"{since.isoformat(timespec='seconds')} to {until.isoformat(timespec='seconds')}",
                          file=file, where=f"{WHERE}.experiment")
    finally:
        mlflow.set_tracking_uri(previous)
    return traffic, not_chat
