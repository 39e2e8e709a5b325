"""The cost of logging a gate's per-item traces (not a test: it prints numbers).

Logs N synthetic items (default 284: the demo's 44 prompt cases + 240 eval items, two assessments each) with
pipeline.integrations.traces.log_traces into a fresh embedded sqlite store, and prints wall and CPU seconds.
MLflow's export settings are read from the environment, so they can be compared:

    .venv/bin/python benchmarks/trace_bench.py [N]
    MLFLOW_ENABLE_ASYNC_TRACE_LOGGING=false .venv/bin/python benchmarks/trace_bench.py
    MLFLOW_ASYNC_TRACE_LOGGING_MAX_WORKERS=1 .venv/bin/python benchmarks/trace_bench.py
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

from pipeline.integrations import traces


def main(n: int) -> None:
    from mlflow.tracking import MlflowClient

    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    with tempfile.TemporaryDirectory() as tmp:
        uri = f"sqlite:///{tmp}/mlflow.db"
        client = MlflowClient(tracking_uri=uri)
        experiment = client.create_experiment("bench", artifact_location=(Path(tmp) / "artifacts").as_uri())
        run = client.create_run(experiment)
        items = [traces.ItemTrace(name=f"suite/case_{i}", kind="format" if i < 44 else "evals",
                                  inputs={"case": f"case_{i}"}, outputs={"output": "x" * 200, "finish_reason": "stop"},
                                  attributes={"latency_s": 0.5}, duration_ms=500,
                                  feedback=(("passed", True, "every expectation met"), ("regex", False, "no match")))
                 for i in range(n)]
        wall, cpu = time.monotonic(), time.process_time()
        held = traces.log_traces(uri, experiment, run.info.run_id, "bench", items, int(time.time() * 1000))
        print(f"{held}/{n} traces: {time.monotonic() - wall:.1f} s wall, {time.process_time() - cpu:.1f} s CPU")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 284)
