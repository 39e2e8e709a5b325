"""Measure the pipeline itself on the demo model (not a test; prints numbers).

1. The gate (`run_gate`, as `modelgate gate` runs it, in a child process timed from outside) on a release.yaml
   (default: the repository's) with a throw-away MLflow store: wall time per stage (from the run's
   report.json), vLLM boots per gate (the "starting vLLM" progress lines; the goal is exactly one per model)
   and the boot's own time ("vLLM ready after"), evals-stage items/s.
2. On the same server, two additions that change nothing the gate runs: the stages that send the gate's own
   requests (format, evals, replay) are metered (the server's token and request counters, /metrics, before
   and after each), and once the load test is done a last stage runs vLLM's serving benchmark at saturation
   (concurrency --saturation-concurrency) with random prompts of each metered stage's mean prompt and output
   lengths, so both sides are the same prefill/decode mix. Prints each stage's token throughput (prompt +
   generated tokens/s) as a fraction of its saturated one (the evals' has issue 13's goal). That stage's time
   is not counted in the gate's wall time.
3. "Nothing idle": a gate costs one boot plus the tokens it needs: the limit = vLLM boot + each metered stage's
   tokens at its mix's saturated throughput + the load test's traffic time (the sum of its levels', rate
   levels' and knee steps' benchmark durations), each term and gate wall / limit. `--without-replay` drops
   the replay stage (issue 13's 570 s gate had none: the 2x goal compares like with like).

Every goal of issue 13 is printed with "goal met" or "goal not met". Sizes (--items, --load-levels, ...) make
a tiny run for the test that keeps this instrument working (tests/e2e/test_pipeline_bench_e2e.py); without
them the release's own configuration is measured.

    .venv/bin/python benchmarks/pipeline_bench.py [--config release.yaml] [--enforce-eager] [--items N]
        [--load-levels 1,3] [--load-requests-per-concurrency N] [--prompt-cases N] [--saturation-concurrency N]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# the goals of issue 13; "today's" figures are the issue's own measurement (2 cores, demo, compiled vLLM)
TODAY_ITEMS_PER_S = 0.75
TODAY_GATE_S = 570.0
ITEMS_SPEEDUP_GOAL = 3.0
SATURATION_GOAL = 0.90
LIMIT_RATIO_GOAL = 1.15
GATE_SPEEDUP_GOAL = 2.0


def goal(met: bool) -> str:
    return "goal met" if met else "goal not met"


@dataclass
class GateFigures:
    wall_s: float  # the gate's wall time, the benchmark's own saturation stage excluded
    boots: int
    boot_s: float | None  # the gate's own vLLM boot: "vLLM ready after X s"
    load_traffic_s: float  # sum of the load levels' benchmark durations
    report: dict[str, Any]


def sized_config(config: Path, args: argparse.Namespace, tmp: Path) -> tuple[Path, str]:
    """The release to gate: `config` itself, or (sizes given) a copy in `tmp` with its relative paths made
    absolute and the sizes applied. Returns (path, gate kind): a prompt-case sample is an advisory gate."""
    import yaml

    if args.items is None and args.load_levels is None and args.load_requests_per_concurrency is None \
            and args.prompt_cases is None and not args.without_replay:
        return config, "release"
    raw = yaml.safe_load(config.read_text(encoding="utf-8"))
    root = config.parent
    cand = raw["candidate"]
    if cand.get("source", "git") == "git" and "://" not in cand["repo"] and not cand["repo"].startswith("git@"):
        cand["repo"] = str((root / cand["repo"]).resolve())
    gates = raw.setdefault("gates", {})
    if "format" in gates:
        gates["format"]["prompts_dir"] = str((root / gates["format"].get("prompts_dir", "prompts")).resolve())
    if "evals" in gates:
        gates["evals"]["include_path"] = str((root / gates["evals"].get("include_path", "evalsets")).resolve())
        if args.items is not None:
            gates["evals"]["limit"] = args.items
    if "load" in gates:
        if args.load_levels is not None:
            gates["load"]["levels"] = args.load_levels
        if args.load_requests_per_concurrency is not None:
            gates["load"].setdefault("prompts", {})["requests_per_concurrency"] = args.load_requests_per_concurrency
    if args.without_replay:
        gates.pop("replay", None)
    elif "replay" in gates and gates["replay"].get("path"):
        gates["replay"]["path"] = str((root / gates["replay"]["path"]).resolve())
    kind = "release"
    if args.prompt_cases is not None:
        gates.setdefault("advisory", {})["sample"] = {"prompt_cases": args.prompt_cases}
        kind = "advisory"
    out = tmp / "release.yaml"
    out.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return out, kind


def gate_timings(config: Path, kind: str, args: argparse.Namespace, tmp: Path) -> GateFigures:
    """The gate as `modelgate gate` runs it (a child process: its start-up counts), timed from outside."""
    run_dir = tmp / "run"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--gate-child", str(run_dir), "--config", str(config),
           "--kind", kind, "--tracking-uri", f"sqlite:///{tmp / 'mlflow.db'}",
           "--saturation-concurrency", str(args.saturation_concurrency)]
    if args.saturation_prompts:
        cmd += ["--saturation-prompts", str(args.saturation_prompts)]
    if args.enforce_eager:
        cmd.append("--enforce-eager")
    t0 = time.monotonic()
    # the model cache of the release the benchmark was given (a sized copy in a temp dir would start cold)
    env = {**os.environ, "MODELGATE_HOME": os.environ.get("MODELGATE_HOME") or str(args.config.resolve().parent
                                                                                  / ".modelgate")}
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=env)
    wall = time.monotonic() - t0
    (tmp / "gate.log").write_text(proc.stderr, encoding="utf-8")
    if args.keep_log:
        args.keep_log.write_text(proc.stderr, encoding="utf-8")
    if args.keep_run and run_dir.is_dir():
        shutil.copytree(run_dir, args.keep_run, dirs_exist_ok=True)
    if not (run_dir / "report.json").exists():
        print(proc.stderr[-4000:], file=sys.stderr)
        raise SystemExit(f"pipeline_bench: the gate exited {proc.returncode} without a report")
    report = json.loads((run_dir / "report.json").read_text())
    stages = {s["name"]: s for s in report["stages"]}
    wall -= stages[SATURATION]["duration_s"] if SATURATION in stages else 0.0
    boots = proc.stderr.count("starting vLLM")
    ready = re.findall(r"vLLM ready after ([0-9.]+)s", proc.stderr)
    boot_s = float(ready[0]) if ready else None
    print(f"gate: exit {proc.returncode}, verdict {report['verdict']}, wall {wall:.1f} s")
    print(f"vLLM boots per gate: {boots} (goal: 1 per model served: {goal(boots == 1)})")
    replay_prod = (stages.get("replay") or {}).get("details", {}).get("production")
    if replay_prod:  # where production's replay answers came from: its records, or asked (where, and why)
        print(f"replay, production's answers: {replay_prod['recorded']} recorded in the traffic, "
              f"{replay_prod.get('from_gate', 0)} by its own gate, {replay_prod['asked']} asked "
              f"({replay_prod.get('asked_at', '?')}: {replay_prod.get('why', '?')})")
    print("per-stage times (report.json):")
    gate_stages = [s for s in report["stages"] if s["name"] != SATURATION]
    for stage in gate_stages:
        print(f"  {stage['name']:<8} {stage['status']:<8} {stage['duration_s']:8.1f} s")
    accounted = sum(s["duration_s"] for s in gate_stages)
    print(f"  {'outside':<8} {'':<8} {wall - accounted:8.1f} s (start-up, input checks, report, MLflow record)")
    load = stages.get("load")
    rows = [r for r in (load or {}).get("details", {}).get("levels", []) if isinstance(r, dict)]
    for row in rows:
        print(f"  load {row.get('level', '?'):>4} conc {row.get('concurrency', '?'):>3}: "
              f"p95 TTFT {row.get('p95_ttft_ms') or 0:7.0f} ms, p95 e2e {row.get('p95_e2el_ms') or 0:7.0f} ms, "
              f"{row.get('output_throughput') or 0:6.1f} out tok/s, {row.get('request_throughput') or 0:.2f} req/s, "
              f"{row.get('completed')}/{row.get('num_prompts')} ok, {row.get('duration') or 0:.1f} s")
    details = (load or {}).get("details", {})
    every = [*rows, *details.get("rate_levels", []), *((details.get("knee") or {}).get("steps", []))]
    traffic = sum(float(r.get("duration") or 0.0) for r in every if isinstance(r, dict))
    evals = stages.get("evals") or {}
    items_per_s = evals.get("metrics", {}).get("items_per_s")
    if items_per_s is not None:
        target = ITEMS_SPEEDUP_GOAL * TODAY_ITEMS_PER_S
        n_items = evals.get("metrics", {}).get("items", 0)
        print(f"evals-stage items/s: {items_per_s:.2f} ({n_items:.0f} items; goal >= {ITEMS_SPEEDUP_GOAL:g}x "
              f"today's {TODAY_ITEMS_PER_S:g} = {target:.2f}: {goal(items_per_s >= target)})")
    else:
        print("evals-stage items/s: n/a (the evals stage did not run)")
    return GateFigures(wall, boots, boot_s, traffic, report)


SATURATION = "saturation"  # the benchmark's own stage, appended after the gate's last one
METERED = ("format", "evals", "replay")  # the stages whose tokens are the gate's own work on the server


@dataclass
class Work:
    """One metered stage's work on the server and the same server's saturated throughput for its mix."""
    stage: str
    tokens: float
    seconds: float
    saturated_tps: float
    cached: float = 0.0  # prompt tokens the prefix cache served (the random-prompt benchmark has none)

    @property
    def at_saturation_s(self) -> float:
        return self.tokens / self.saturated_tps if self.saturated_tps > 0 else 0.0

    @property
    def computed_at_saturation_s(self) -> float:
        """The tokens the server had to compute (cached prompt tokens free) at the saturated throughput."""
        return (self.tokens - self.cached) / self.saturated_tps if self.saturated_tps > 0 else 0.0


COUNTERS = ("prompt", "generated", "requests", "cached")


def _counters(endpoint: Any) -> tuple[float, ...]:
    """The server's prompt and generated tokens, successful requests, prompt tokens read from the prefix cache."""
    import httpx

    from pipeline.serving.prometheus import parse

    m = parse(httpx.get(f"{endpoint.base_url}/metrics", headers=endpoint.headers(), timeout=10).text)
    return (m.get("vllm:prompt_tokens_total", 0.0), m.get("vllm:generation_tokens_total", 0.0),
            m.get("vllm:request_success_total", 0.0), m.get("vllm:prefix_cache_hits_total", 0.0))


def child_gate(config: Path, run_dir: Path, uri: str, kind: str, enforce_eager: bool, concurrency: int,
               prompts: int | None) -> int:
    """The gate, in this (child) process, with two additions that do not change what it runs: the stages that
    send the gate's own requests (format, evals, replay) are metered (the server's token and request counters
    read before and after each), and a last stage saturates the same server with each one's mix (its mean
    prompt and output lengths, random prompts) once the load test is done."""
    from pipeline.cli.common import home as _home
    from pipeline.config.release import load_release
    from pipeline.core.result import StageResult, Status
    from pipeline.gate.context import GateContext
    from pipeline.gate.run import STAGES, run_gate
    from pipeline.tools.servebench import BenchRequest, BenchWorker

    metered: dict[str, dict[str, float]] = {}

    def meter(name: str, run: Any) -> Any:
        def metered_run(ctx: GateContext) -> StageResult:
            if ctx.endpoint is None:
                return run(ctx)
            before, t0 = _counters(ctx.endpoint), time.monotonic()
            result = run(ctx)
            m = dict(zip(COUNTERS,
                         (b - a for a, b in zip(before, _counters(ctx.endpoint), strict=True)), strict=True))
            metered[name] = {**m, "seconds": time.monotonic() - t0}
            return result
        return metered_run

    def saturate(ctx: GateContext) -> StageResult:
        out = ctx.files.stage(SATURATION)
        runs: dict[str, Any] = {}
        with BenchWorker(out / "bench.log") as worker:
            for name, m in metered.items():
                if not m.get("requests"):
                    continue
                in_len = max(1, round(m["prompt"] / m["requests"]))
                out_len = max(1, round(m["generated"] / m["requests"]))
                req = BenchRequest(ctx.endpoint.base_url, ctx.endpoint.served_name, str(ctx.model_dir.path),
                                   concurrency=concurrency, num_prompts=prompts or concurrency * 8, input_len=in_len,
                                   output_len=out_len, seed=0, request_timeout_s=ctx.release.serving.request_timeout_s,
                                   api_key=ctx.endpoint.api_key)
                result = worker.level(req, out, f"saturated_{name}.json")
                runs[name] = {"metered": m, "input_len": in_len, "output_len": out_len, "concurrency": concurrency,
                              **{k: result.get(k) for k in ("total_token_throughput", "request_throughput",
                                                            "completed", "num_prompts", "duration")}}
        if not runs:
            return StageResult(SATURATION, Status.SKIPPED, reasons=["no metered stage sent requests"])
        return StageResult(SATURATION, Status.PASSED, details={"runs": runs})

    stages = tuple((name, meter(name, run) if name in METERED else run) for name, run in STAGES)
    release = load_release(config)
    report = run_gate(release, home=_home(config), run_dir=run_dir, tracking_uri=uri, kind=kind,
                      enforce_eager=True if enforce_eager else None, stages=(*stages, (SATURATION, saturate)))
    return report.exit_code


def work_vs_saturation(report: dict[str, Any]) -> list[Work]:
    """Each metered stage's token throughput against the saturated benchmark of its own mix (printed)."""
    stage = next((s for s in report["stages"] if s["name"] == SATURATION), None)
    if stage is None or stage["status"] != "passed":
        print(f"evals-stage token throughput / saturated: n/a (saturation stage "
              f"{stage['status'] if stage else 'absent'}: {'; '.join(stage['reasons']) if stage else ''})")
        return []
    durations = {s["name"]: s["duration_s"] for s in report["stages"]}
    work = []
    for name, d in stage["details"]["runs"].items():
        m = d["metered"]
        tokens = m["prompt"] + m["generated"]
        seconds = durations.get(name) or m["seconds"]
        tps = tokens / seconds if seconds > 0 else 0.0
        sat = float(d["total_token_throughput"] or 0.0)
        cached = float(m.get("cached", 0.0))
        print(f"{name} workload (the gate's {name} stage, from the server's counters): {m['requests']:.0f} requests, "
              f"{m['prompt']:.0f} prompt + {m['generated']:.0f} generated tokens in {seconds:.1f} s = {tps:.0f} tok/s "
              f"({cached:.0f} of the prompt tokens from the prefix cache)")
        print(f"saturated serving benchmark, same server, same mix as {name} ({d['input_len']} in / "
              f"{d['output_len']} out, concurrency {d['concurrency']}): {sat:.0f} total tok/s, "
              f"{d['request_throughput']:.2f} req/s, {d['completed']}/{d['num_prompts']} ok, {d['duration']:.1f} s "
              "(not counted in the gate's wall time)")
        ratio = tps / sat if sat > 0 else 0.0
        if name == "evals":
            print(f"evals-stage token throughput / saturated: {ratio:.2f} (goal >= {SATURATION_GOAL:.2f}: "
                  f"{goal(ratio >= SATURATION_GOAL)})")
        else:
            print(f"{name}-stage token throughput / saturated: {ratio:.2f}")
        work.append(Work(name, tokens, seconds, sat, cached))
    return work


def nothing_idle(gate: GateFigures, work: list[Work], today_gate_s: float) -> None:
    boot = gate.boot_s or 0.0
    limit = boot + sum(w.at_saturation_s for w in work) + gate.load_traffic_s
    print('"nothing idle" limit (a gate costs one boot plus the tokens it needs):')
    print(f"  vLLM boot:                            {boot:8.1f} s"
          + ("" if gate.boot_s is not None else " (no 'vLLM ready' line: the gate did not boot vLLM)"))
    for w in work:
        label = "eval" if w.stage == "evals" else w.stage
        print(f"  {label + ' tokens at saturated throughput:':<38}{w.at_saturation_s:8.1f} s ({w.tokens:.0f} tokens "
              f"at {w.saturated_tps:.0f} tok/s)")
    print(f"  load test traffic:                    {gate.load_traffic_s:8.1f} s")
    print(f"  limit:                                {limit:8.1f} s")
    ratio = gate.wall_s / limit if limit > 0 else float("inf")
    print(f"gate wall time / limit: {gate.wall_s:.1f} / {limit:.1f} = {ratio:.2f} "
          f"(goal <= {LIMIT_RATIO_GOAL:.2f}: {goal(ratio <= LIMIT_RATIO_GOAL)})")
    strict = boot + sum(w.computed_at_saturation_s for w in work) + gate.load_traffic_s
    print(f"the same limit with prompt tokens served by the prefix cache counted as free: {strict:.1f} s, "
          f"gate wall time / it = {gate.wall_s / strict if strict > 0 else float('inf'):.2f} (no goal: the "
          "saturated benchmark's random prompts share no prefix)")
    speedup = today_gate_s / gate.wall_s
    print(f"gate speed-up vs today's {today_gate_s:.0f} s: {speedup:.2f}x (goal >= {GATE_SPEEDUP_GOAL:g}x: "
          f"{goal(speedup >= GATE_SPEEDUP_GOAL)})")


def levels(text: str) -> list[float]:
    try:
        out = [float(x) for x in text.split(",") if x.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of numbers: {text!r}") from exc
    if not out or any(x <= 0 for x in out):
        raise argparse.ArgumentTypeError(f"levels must be positive numbers: {text!r}")
    return [int(x) if x.is_integer() else x for x in out]


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {text}")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--config", type=Path, default=REPO / "release.yaml")
    parser.add_argument("--enforce-eager", action="store_true", help="faster start, slower decode")
    parser.add_argument("--items", type=positive, help="eval items per task (default: the release's)")
    parser.add_argument("--load-levels", type=levels, help="load levels, e.g. 1 or 1,3,5 (default: the release's)")
    parser.add_argument("--load-requests-per-concurrency", type=positive)
    parser.add_argument("--prompt-cases", type=positive, help="a sample of the prompt cases (an advisory gate)")
    parser.add_argument("--without-replay", action="store_true",
                        help="drop gates.replay (issue 13's 570 s gate had no replay stage)")
    parser.add_argument("--saturation-concurrency", type=positive, default=16)
    parser.add_argument("--saturation-prompts", type=positive, help="default: 8 x the saturation concurrency")
    parser.add_argument("--today-gate-s", type=float, default=TODAY_GATE_S,
                        help="today's gate wall time the 2x goal compares with (issue 13: 570 s, compiled)")
    parser.add_argument("--keep-log", type=Path, help="write the gate's progress log (stderr) here")
    parser.add_argument("--gate-child", type=Path, help=argparse.SUPPRESS)  # internal: run the gate, this run dir
    parser.add_argument("--keep-run", type=Path, help="copy the gate's run directory (report.json, ...) here")
    parser.add_argument("--kind", default="release", help=argparse.SUPPRESS)
    parser.add_argument("--tracking-uri", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    config = args.config.resolve()
    if args.gate_child:
        return child_gate(config, args.gate_child, args.tracking_uri, args.kind, args.enforce_eager,
                          args.saturation_concurrency, args.saturation_prompts)
    print(f"pipeline_bench: {config}, vLLM {'eager (--enforce-eager)' if args.enforce_eager else 'as configured'}"
          f", sizes: items {args.items or 'all'}, load levels {args.load_levels or 'configured'}, "
          f"prompt cases {args.prompt_cases or 'all'}", flush=True)
    with tempfile.TemporaryDirectory(prefix="pipeline-bench-") as tmp_name:
        tmp = Path(tmp_name)
        gate_config, kind = sized_config(config, args, tmp)
        gate = gate_timings(gate_config, kind, args, tmp)
        work = work_vs_saturation(gate.report)
        if not any(w.stage == "evals" for w in work):
            print("evals-stage token throughput / saturated: n/a (the evals stage did not complete)")
        nothing_idle(gate, work, args.today_gate_s)
    return 0


if __name__ == "__main__":
    sys.exit(main())
