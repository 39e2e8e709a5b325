"""Multiple-choice scoring, old against new, on one vLLM boot of the demo model (not a test; prints numbers).

The evals stage as the gate runs it (gates.evals of release.yaml: its tasks, num_concurrent and prompting),
once with `loglikelihood: prefix_cached` (forced decoding on the prefix cache, pipeline/tools/lmeval_model.py)
and once with `loglikelihood: echo` (lm-eval's local-completions prompt-logprob requests), the prefix-cached
run first (echo requests never read the cache, so they gain nothing from what the other run left in it).
Prints per run: wall time, items/s, requests, prompt tokens, prefix-cache queries/hits (vLLM /metrics); then
the per-item decision diff of every multiple-choice metric and the largest per-choice loglikelihood gap.

    MODELGATE_HOME=/work/main/.modelgate .venv/bin/python benchmarks/mc_scoring_bench.py [--enforce-eager] \
        [--limit N] [--tasks support_intent,support_facts] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def per_choice(samples_file: str) -> dict[int, list[float]]:
    """doc_id -> each choice's loglikelihood as lm-eval logged it."""
    out = {}
    with open(samples_file, encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                s = json.loads(line)
                out[s["doc_id"]] = [float(r[0]) for r in s["filtered_resps"]]
    return out


def main() -> int:
    import dataclasses

    import httpx
    import yaml

    from pipeline.config.release import EvalsGate, Pin, Serving
    from pipeline.demo.hub import publish_demo_hub
    from pipeline.gate.stages import evals
    from pipeline.model.fetch import fetch
    from pipeline.serving.prometheus import parse
    from pipeline.serving.vllm_server import VllmServer
    from pipeline.tools.lmeval import task_config

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--enforce-eager", action="store_true")
    parser.add_argument("--limit", type=int, default=None, help="items per task (default: all)")
    parser.add_argument("--tasks", default=None, help="comma-separated (default: release.yaml's)")
    parser.add_argument("--modes", default="prefix_cached,echo")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--keep", type=Path, default=None, help="keep lm-eval's files and the server log here")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    say = lambda m: print(f"  [bench] {m}", file=sys.stderr, flush=True)  # noqa: E731

    release = yaml.safe_load((REPO / "release.yaml").read_text())
    ev = dict(release["gates"]["evals"])
    tasks = tuple(args.tasks.split(",")) if args.tasks else tuple(ev["tasks"])
    base = EvalsGate(include_path=ev["include_path"], tasks=tasks, num_concurrent=ev["num_concurrent"],
                     limit=args.limit)
    hub = publish_demo_hub(Path(os.environ.get("MODELGATE_HOME", REPO / ".modelgate")), progress=say)
    v = hub["variants"]["instruct"]
    pin = Pin("git", hub["repo_path"], v["revision"], v["files"])
    results: dict[str, Any] = {"enforce_eager": args.enforce_eager, "tasks": list(tasks), "limit": args.limit,
                               "num_concurrent": base.num_concurrent, "runs": {}}
    with tempfile.TemporaryDirectory(prefix="mc-bench-") as tmp_name:
        tmp = Path(tmp_name)
        if args.keep:
            args.keep.mkdir(parents=True, exist_ok=True)
            tmp = args.keep
        model_dir = fetch(pin, hub["repo_path"], tmp / "home", file="bench", progress=say)
        serving = Serving(enforce_eager=args.enforce_eager, max_model_len=2048, env={"VLLM_CPU_KVCACHE_SPACE": "2"})
        server = VllmServer(model_dir.path, f"chat@{pin.short}", serving, tmp / "server.log", progress=say)
        runs: dict[str, Any] = {}
        with server as endpoint:
            def counters() -> dict[str, float]:
                m = parse(httpx.get(f"{endpoint.base_url}/metrics", headers=endpoint.headers(), timeout=10).text)
                keys = ("vllm:prefix_cache_queries_total", "vllm:prefix_cache_hits_total",
                        "vllm:prompt_tokens_total", "vllm:request_success_total")
                return {k.split(":")[1]: m.get(k, 0.0) for k in keys}

            for mode in args.modes.split(","):
                cfg = dataclasses.replace(base, loglikelihood=mode)
                before, t0 = counters(), time.monotonic()
                run = evals.evaluate(endpoint, model_dir.path, cfg, REPO, tmp / mode, say)
                wall = time.monotonic() - t0
                delta = {k: v - before[k] for k, v in counters().items()}
                runs[mode] = run
                q, h = delta["prefix_cache_queries_total"], delta["prefix_cache_hits_total"]
                results["runs"][mode] = {
                    "wall_s": round(wall, 1), "items": run.n_items, "items_per_s": round(run.n_items / wall, 3),
                    "requests": delta["request_success_total"], "prompt_tokens": delta["prompt_tokens_total"],
                    "prefix_cache_queries": q, "prefix_cache_hits": h,
                    "prefix_cache_hit_rate": round(h / q, 3) if q else None,
                    "metrics": {t: s.metrics for t, s in run.tasks.items()}, "command": run.command}
                r = results["runs"][mode]
                print(f"{mode:>13}: {run.n_items} items in {wall:6.1f} s = {r['items_per_s']:.2f} items/s; "
                      f"{r['requests']:.0f} requests, {r['prompt_tokens']:.0f} prompt tokens; prefix cache "
                      f"{h:.0f}/{q:.0f} tokens hit ({100 * h / q if q else 0:.0f}%); "
                      + "; ".join(f"{t} " + ", ".join(f"{k}={x:.3f}" for k, x in s.metrics.items())
                                  for t, s in run.tasks.items()), flush=True)
        if {"prefix_cached", "echo"} <= set(runs):
            new, old = runs["prefix_cached"], runs["echo"]
            speedup = results["runs"]["prefix_cached"]["items_per_s"] / results["runs"]["echo"]["items_per_s"]
            print(f"evals stage items/s: {speedup:.2f}x (prefix_cached over echo)")
            diff: dict[str, Any] = {"speedup": round(speedup, 2), "tasks": {}}
            for task in tasks:
                if (task_config(REPO / base.include_path, task) or {}).get("output_type") != "multiple_choice":
                    continue
                a = {it["doc_id"]: it for it in new.items if it["task"] == task}
                b = {it["doc_id"]: it for it in old.items if it["task"] == task}
                lla, llb = per_choice(new.samples_files[task]), per_choice(old.samples_files[task])
                gaps = [abs(x - y) for d in lla for x, y in zip(lla[d], llb[d], strict=True)]
                differing = []
                for d in sorted(a):
                    for metric in ("acc", "acc_norm"):
                        if a[d].get(metric) != b[d].get(metric):
                            differing.append({"doc_id": d, "metric": metric, "prefix_cached": a[d].get(metric),
                                              "echo": b[d].get(metric), "ll_prefix_cached": lla[d], "ll_echo": llb[d]})
                diff["tasks"][task] = {"items": len(a), "differing": differing, "max_ll_gap": max(gaps),
                                       "mean_ll_gap": sum(gaps) / len(gaps)}
                print(f"{task}: {len(a)} items, {len(differing)} per-item acc/acc_norm differences; per-choice "
                      f"loglikelihood |prefix_cached - echo| max {max(gaps):.4f}, mean {sum(gaps) / len(gaps):.5f}")
                for row in differing:
                    print(f"  doc {row['doc_id']} {row['metric']}: prefix_cached {row['prefix_cached']} echo "
                          f"{row['echo']}; ll prefix_cached {[round(x, 4) for x in row['ll_prefix_cached']]} "
                          f"echo {[round(x, 4) for x in row['ll_echo']]}")
            results["diff"] = diff
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
