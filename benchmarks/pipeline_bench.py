"""Measure the pipeline itself on the demo model (not a test; prints numbers).

1. `modelgate gate` on a release.yaml (default: the repository's) with a throw-away MLflow store:
   wall time per stage (from runs/<id>/report.json) and vLLM boots per gate (the "starting vLLM" progress
   lines; the goal is exactly one per model).
2. One vLLM boot of the same model: the evals stage's workload (lm-eval on the release's evalsets) while the
   server's token and request counters are read from /metrics, then vLLM's serving benchmark at saturation
   (concurrency --saturation-concurrency) with random prompts of the evals' own mean prompt and output
   lengths, so both sides are the same prefill/decode mix. Prints the eval stage's token throughput
   (prompt + generated tokens/s) as a fraction of the saturated one.

    .venv/bin/python benchmarks/pipeline_bench.py [--config release.yaml] [--enforce-eager] [--skip-gate]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def gate_timings(config: Path, enforce_eager: bool, tmp: Path) -> None:
    run_dir = tmp / "run"
    cmd = [sys.executable, "-m", "pipeline", "gate", "--config", str(config), "--run-dir", str(run_dir),
           "--tracking-uri", f"sqlite:///{tmp / 'mlflow.db'}"]
    if enforce_eager:
        cmd.append("--enforce-eager")
    t0 = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    wall = time.monotonic() - t0
    report = json.loads((run_dir / "report.json").read_text())
    boots = proc.stderr.count("starting vLLM")
    print(f"gate: exit {proc.returncode}, verdict {report['verdict']}, wall {wall:.1f} s, vLLM boots {boots} "
          f"(goal: 1 per model served)")
    for stage in report["stages"]:
        print(f"  {stage['name']:<8} {stage['status']:<8} {stage['duration_s']:8.1f} s")
    load = next((s for s in report["stages"] if s["name"] == "load" and s["details"].get("levels")), None)
    for row in (load or {}).get("details", {}).get("levels", []):
        print(f"  load {row['level']:>4} conc {row['concurrency']:>3}: p95 TTFT {row.get('p95_ttft_ms', 0):7.0f} ms, "
              f"p95 e2e {row.get('p95_e2el_ms', 0):7.0f} ms, {row.get('output_throughput', 0):6.1f} out tok/s, "
              f"{row.get('request_throughput', 0):.2f} req/s, {row['completed']}/{row['num_prompts']} ok, "
              f"max waiting {row['server'].get('max_waiting', 0):.0f}, "
              f"max KV {100 * row['server'].get('max_kv_cache_usage', 0):.1f}%")
    if load:
        print(f"  load curve {load['details']['curve']['shape']}, cost per 1M output tokens "
              f"{load['details'].get('cost_per_1m_output_tokens')}")


def eval_vs_saturation(config: Path, enforce_eager: bool, tmp: Path, concurrency: int) -> None:
    import httpx

    from pipeline.cli import _home
    from pipeline.config.release import load_release
    from pipeline.gate.stages import evals
    from pipeline.model.fetch import fetch
    from pipeline.serving.prometheus import parse
    from pipeline.serving.vllm_server import VllmServer
    from pipeline.tools.servebench import BenchRequest, run_level

    release = load_release(config)
    say = lambda m: print(f"  [bench] {m}", file=sys.stderr, flush=True)  # noqa: E731
    pin = release.candidate
    model_dir = fetch(pin, release.repo_location(pin), _home(config), file=str(config),
                      allowlist=release.remote_code_allowlist, progress=say)
    served = release.served_name(pin)
    with VllmServer(model_dir.path, served, release.serving, tmp / "server.log", enforce_eager=enforce_eager or None,
                    progress=say) as endpoint:
        def counters() -> tuple[float, float, float]:
            m = parse(httpx.get(f"{endpoint.base_url}/metrics", headers=endpoint.headers(), timeout=10).text)
            return (m.get("vllm:prompt_tokens_total", 0.0), m.get("vllm:generation_tokens_total", 0.0),
                    m.get("vllm:request_success_total", 0.0))

        before, t0 = counters(), time.monotonic()
        evals.evaluate(endpoint, model_dir.path, release.evals_gate, release.root, tmp / "evals", say)
        eval_s = time.monotonic() - t0
        prompt, generated, requests = (b - a for a, b in zip(before, counters(), strict=True))
        # saturate the same server with the evals' own mix: their mean prompt and output lengths
        in_len, out_len = max(1, round(prompt / max(requests, 1))), max(1, round(generated / max(requests, 1)))
        req = BenchRequest(endpoint.base_url, served, str(model_dir.path), concurrency=concurrency,
                           num_prompts=concurrency * 8, input_len=in_len, output_len=out_len, seed=0,
                           request_timeout_s=release.serving.request_timeout_s, api_key=endpoint.api_key)
        result = run_level(req, tmp / "bench", "saturated.json", tmp / "bench.log")
    eval_tps = (prompt + generated) / eval_s
    sat = result["total_token_throughput"]
    print(f"evals workload: {requests:.0f} requests, {prompt:.0f} prompt + {generated:.0f} generated tokens in "
          f"{eval_s:.1f} s = {eval_tps:.0f} tok/s (lm-eval num_concurrent {release.evals_gate.num_concurrent})")
    print(f"saturated serving benchmark, same mix ({in_len} in / {out_len} out, concurrency {concurrency}): "
          f"{sat:.0f} total tok/s, {result['request_throughput']:.2f} req/s, "
          f"{result['completed']}/{result['num_prompts']} ok")
    print(f"eval stage throughput = {eval_tps / sat:.2f} of saturated")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=REPO / "release.yaml")
    parser.add_argument("--enforce-eager", action="store_true", help="faster start, slower decode")
    parser.add_argument("--skip-gate", action="store_true")
    parser.add_argument("--skip-saturation", action="store_true")
    parser.add_argument("--saturation-concurrency", type=int, default=16)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    with tempfile.TemporaryDirectory(prefix="pipeline-bench-") as tmp:
        if not args.skip_gate:
            gate_timings(args.config.resolve(), args.enforce_eager, Path(tmp))
        if not args.skip_saturation:
            eval_vs_saturation(args.config.resolve(), args.enforce_eager, Path(tmp), args.saturation_concurrency)
    return 0


if __name__ == "__main__":
    sys.exit(main())
