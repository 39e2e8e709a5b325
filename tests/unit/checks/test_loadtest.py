"""The load-test rules (pipeline/checks/slo.py), /metrics parsing, the benchmark command, and gates.load config."""

import copy
import json
from pathlib import Path

import pytest

from pipeline.checks import fingerprint as fpc
from pipeline.checks import slo
from pipeline.config.release import LoadSlo, load_release
from pipeline.core.result import Status
from pipeline.errors import ConfigError
from pipeline.integrations.registry import Baseline
from pipeline.serving import fingerprint as srv
from pipeline.serving import prometheus as prommetrics
from pipeline.tools import servebench
from tests.support.paths import REPO
from tests.support.releases import VALID_RELEASE

METRICS_TEXT = (REPO / "tests/fixtures/vllm_metrics.txt").read_text()


def bench(completed=16, failed=0, p95_e2el=3000.0, p95_ttft=400.0, tput=100.0, **extra):
    return {"num_prompts": completed + failed, "completed": completed, "failed": failed, "duration": 10.0,
            "request_throughput": 1.6, "output_throughput": tput, "p50_e2el_ms": p95_e2el * 0.9,
            "p95_e2el_ms": p95_e2el, "p99_e2el_ms": p95_e2el * 1.05, "p95_ttft_ms": p95_ttft, "p95_tpot_ms": 45.0,
            **extra}


def row(mult=1, conc=2, **kw):
    return slo.level_summary(mult, conc, bench(**kw), {"max_waiting": 0.0})


def test_levels_within_slo_pass():
    rule = LoadSlo(p95_e2el_ms=5000, p95_ttft_ms=1000, min_output_throughput=50)
    assert slo.check_level(row(), rule) == []
    assert row()["level"] == "1x" and row(mult=2.5)["level"] == "2.5x"


@pytest.mark.parametrize("kw, rule, expected", [
    ({"p95_e2el": 8123.4}, LoadSlo(p95_e2el_ms=5000), "load 3x: p95_e2el_ms 8123 > SLO 5000"),
    ({"p95_ttft": 2500}, LoadSlo(p95_ttft_ms=1000), "load 3x: p95_ttft_ms 2500 > SLO 1000"),
    ({"tput": 12.0}, LoadSlo(min_output_throughput=50), "load 3x: output_throughput 12.0 tok/s < SLO 50"),
    ({"failed": 1}, LoadSlo(), "load 3x: 1 of 17 request(s) failed (max_failed 0)"),
])
def test_each_slo_failure_names_the_slo_and_level(kw, rule, expected):
    assert slo.check_level(row(mult=3, conc=6, **kw), rule) == [expected]


def test_failed_requests_fail_even_without_latency_slos_and_missing_ones_count():
    result = json.loads(json.dumps(bench(completed=15)))
    result["num_prompts"] = 16  # one request neither completed nor reported failed
    r = slo.level_summary(1, 2, result)
    assert r["failed"] == 1 and slo.check_level(r, LoadSlo())
    assert slo.check_level(row(failed=2), LoadSlo(max_failed=2)) == []


def test_curve_gradual_when_latency_grows_with_load_and_cliff_when_faster_or_throughput_collapses():
    gradual = [row(1, 2, p95_e2el=3000), row(3, 6, p95_e2el=7000), row(5, 10, p95_e2el=11000)]
    assert slo.curve_shape(gradual)["shape"] == "gradual"
    cliff = [row(1, 2, p95_e2el=3000), row(3, 6, p95_e2el=3000 * 3 * 1.6)]
    shape = slo.curve_shape(cliff)
    assert shape["shape"] == "cliff" and shape["steps"][0]["cliff"] and shape["steps"][0]["from"] == "1x"
    collapse = [row(1, 2, tput=100), row(3, 6, tput=70)]
    assert slo.curve_shape(collapse)["shape"] == "cliff"
    assert slo.curve_shape([row()])["shape"] == "single level"


COMPILED = ["python", "-m", "vllm.entrypoints.openai.api_server", "--model", "/m", "--served-model-name", "chat@x",
            "--host", "127.0.0.1", "--port", "8000", "--dtype", "bfloat16", "--max-model-len", "2048",
            "--tensor-parallel-size", "1"]


def test_fingerprint_matching():
    fp = srv.fingerprint("0.32.0", serving=srv.serving_config(COMPILED, {}))
    assert fp["cpu_count"] >= 1 and fp["vllm"] == "0.32.0" and isinstance(fp["gpu_count"], int)
    assert fpc.fingerprint_differences(fp, dict(fp)) == []
    diffs = fpc.fingerprint_differences(fp, {**fp, "cpu_count": 64, "vllm": "0.31.0"})
    assert len(diffs) == 2 and diffs[0].startswith("cpu_count: 64 (baseline)")
    assert fpc.fingerprint_differences(fp, None) == ["the baseline recorded no hardware fingerprint"]


def test_serving_configuration_is_read_from_the_real_command_line_and_environment():
    """Where the server listens is left out; how it serves is kept, unknown arguments included."""
    eager = [*COMPILED, "--enforce-eager", "--max-num-seqs=8", "--quantization", "fp8", "--some-new-flag", "x",
             "--enable-prefix-caching"]
    got = srv.serving_config(eager, {"VLLM_CPU_KVCACHE_SPACE": "2", "PATH": "/bin", "VLLM_API_KEY": "k"})
    assert got == {"enforce_eager": True, "dtype": "bfloat16", "max_model_len": "2048", "tensor_parallel_size": "1",
                   "max_num_seqs": "8", "quantization": "fp8", "prefix_caching": True,
                   "other_args": ["--some-new-flag=x"], "env": {"VLLM_CPU_KVCACHE_SPACE": "2"}}
    assert srv.serving_config(COMPILED, {}) == {"enforce_eager": False, "dtype": "bfloat16", "max_model_len": "2048",
                                               "tensor_parallel_size": "1", "env": {}}
    other_port = [a if a != "8000" else "9000" for a in COMPILED]
    assert srv.serving_config(other_port, {}) == srv.serving_config(COMPILED, {})


def test_compiled_production_and_eager_candidate_are_not_compared():
    """The case from the issue: production gated compiled, the candidate with --enforce-eager on the same
    hardware. The comparison is skipped naming the field, not failed."""
    prod = srv.fingerprint("0.32.0", serving=srv.serving_config(COMPILED, {"VLLM_CPU_KVCACHE_SPACE": "2"}))
    cand = srv.fingerprint("0.32.0", serving=srv.serving_config([*COMPILED, "--enforce-eager"],
                                                                {"VLLM_CPU_KVCACHE_SPACE": "1"}))
    assert fpc.fingerprint_differences(cand, prod) == [
        "serving.enforce_eager: False (baseline) != True (candidate)",
        "serving.env.VLLM_CPU_KVCACHE_SPACE: '2' (baseline) != '1' (candidate)"]
    assert fpc.not_comparable(cand, prod) == ("not comparable: compilation mode and KV cache size differ",
                                              fpc.fingerprint_differences(cand, prod))
    # the demo's case: only the compilation mode differs
    demo_prod = srv.fingerprint("0.32.0", serving=srv.serving_config(COMPILED, {"VLLM_CPU_KVCACHE_SPACE": "1"}))
    assert fpc.not_comparable(cand, demo_prod) == ("not comparable: compilation mode differs",
                                                   ["serving.enforce_eager: False (baseline) != True (candidate)"])
    assert fpc.not_comparable(cand, cand) is None
    old_baseline = {k: v for k, v in prod.items() if k != "serving"}  # recorded before serving was fingerprinted
    assert fpc.fingerprint_differences(cand, old_baseline) == [
        "serving: the baseline recorded no serving configuration (cannot tell like from like)"]
    assert fpc.not_comparable(cand, old_baseline)[0] == \
        "not comparable: the baseline recorded no serving configuration"
    assert fpc.not_comparable(cand, None)[0] == "not comparable: the baseline recorded no fingerprint"


def test_the_demos_compiled_production_and_eager_candidate_read_compilation_mode_differs(write_release):
    """`modelgate gate` then `modelgate gate --enforce-eager` on one release: the servers' real command lines
    (build_command) differ in the compilation mode only, and the load stage says so in those words."""
    from types import SimpleNamespace

    from pipeline.config.release import Serving
    from pipeline.gate.stages.load import compare_baseline
    from pipeline.serving.vllm_server import build_command

    serving = Serving(env={"VLLM_CPU_KVCACHE_SPACE": "1"})
    fps = [srv.fingerprint("0.32.0", serving=srv.serving_config(
        build_command(Path("/m"), name, port, serving, enforce_eager=eager), serving.env))
        for name, port, eager in (("chat@aaaa", 8001, None), ("chat@bbbb", 8002, True))]
    rows = [row(1, 1), row(3, 3)]
    store = SimpleNamespace(production=lambda name: Baseline("1", "run1", None, {}, {},
                                                             {"levels": rows, "fingerprint": fps[0]}))
    ctx = SimpleNamespace(baseline_store=store, release=SimpleNamespace(model_name="m", alpha=0.05))
    info, failures = compare_baseline(ctx, _release(write_release, {}).load_gate, rows, fps[1])
    assert failures == [] and info["status"] == "skipped"
    assert info["reason"] == "not comparable: compilation mode differs"
    assert info["differences"] == ["serving.enforce_eager: False (baseline) != True (candidate)"]
    assert slo.comparison_lines(rows, info) == [
        f"{lvl}: not compared with production v1 (run run1) (not comparable: compilation mode differs)"
        for lvl in ("1x", "3x")]
    kv = [*build_command(Path("/m"), "chat@x", 8001, serving), "--kv-cache-memory-bytes", "1000000"]
    assert fpc.not_comparable(srv.fingerprint("0.32.0", serving=srv.serving_config(kv, serving.env)), fps[0]) == (
        "not comparable: KV cache size differs", ["serving.kv_cache_memory_bytes: None (baseline) != '1000000' "
                                                  "(candidate)"])


def test_not_comparable_names_every_differing_field_in_words():
    """Hardware, then the serving fields by the names a reader knows; each name once; one detail line each."""
    base = srv.fingerprint("0.32.0", serving=srv.serving_config(COMPILED, {"OMP_NUM_THREADS": "2"}))
    other = [*COMPILED, "--quantization", "fp8", "--max-num-seqs", "4", "--pipeline-parallel-size", "2",
             "--kv-cache-dtype", "fp8", "--some-new-flag", "x"]
    other[other.index("bfloat16")] = "float16"
    other[other.index("2048")] = "1024"
    cand = {**srv.fingerprint("0.33.0", serving=srv.serving_config(other, {"VLLM_CPU_KVCACHE_SPACE": "4"})),
            "gpu_count": base["gpu_count"] + 1}
    reason, lines = fpc.not_comparable(cand, base)
    assert reason == ("not comparable: GPU count, vLLM version, dtype, KV cache dtype, max_model_len, max_num_seqs, "
                      "extra server args, pipeline parallel size, quantization, CPU threads and KV cache size differ")
    assert len(lines) == 11 and lines[0].startswith("gpu_count: ") and lines[1] == \
        "vllm: '0.32.0' (baseline) != '0.33.0' (candidate)"
    assert "serving.other_args: None (baseline) != ['--some-new-flag=x'] (candidate)" in lines
    assert "serving.env.OMP_NUM_THREADS: '2' (baseline) != None (candidate)" in lines


def test_regressions_against_the_baseline_at_the_same_level():
    base = [row(1, 2, p95_e2el=3000, tput=100), row(3, 6, p95_e2el=6000, tput=120)]
    assert slo.regressions([row(1, 2, p95_e2el=3500, tput=95)], base, 20) == []
    out = slo.regressions([row(1, 2, p95_e2el=3000), row(3, 6, p95_e2el=8000, tput=80)], base, 20)
    assert out == ["load 3x: p95_e2el_ms 8000 is 33% above the baseline's 6000 (regression_pct 20)",
                   "load 3x: output_throughput 80.0 tok/s is 33% below the baseline's 120.0 (regression_pct 20)"]
    assert slo.regressions([row(3, 9, p95_e2el=99999)], base, 20) == []  # other concurrency: not comparable


def test_cost_arithmetic():
    # $3.60/h at 1000 tok/s = 3.6M tokens per hour -> $1 per 1M tokens
    assert slo.cost_per_1m_output_tokens(1000.0, 3.6) == pytest.approx(1.0)
    assert slo.cost_per_1m_output_tokens(100.0, 0.10) == pytest.approx(0.2778, abs=1e-4)
    assert slo.cost_per_1m_output_tokens(0.0, 1.0) is None and slo.cost_per_1m_output_tokens(5.0, None) is None
    rows = [row(1, 2, tput=80), row(3, 6, tput=120, p95_e2el=9000)]
    assert slo.costing_throughput(rows, LoadSlo(p95_e2el_ms=5000)) == 80  # best within SLO
    assert slo.costing_throughput(rows, LoadSlo(p95_e2el_ms=1)) == 120  # none within: best overall


def test_metrics_parsing_from_a_real_vllm_capture():
    values = prommetrics.parse(METRICS_TEXT)
    assert values["vllm:num_requests_running"] == 10.0
    assert prommetrics.pick(values, prommetrics.WAITING) == 0.0
    assert 0 < prommetrics.pick(values, prommetrics.KV_USAGE) < 1
    assert prommetrics.pick(values, prommetrics.PREEMPTIONS) == 0.0
    later = METRICS_TEXT.replace('vllm:num_preemptions_total{engine="0",model_name="demo"} 0.0',
                                 'vllm:num_preemptions_total{engine="0",model_name="demo"} 3.0')
    later = later.replace('vllm:num_requests_waiting{engine="0",model_name="demo"} 0.0',
                          'vllm:num_requests_waiting{engine="0",model_name="demo"} 4.0')
    summary = prommetrics.summarize([prommetrics.parse(METRICS_TEXT), prommetrics.parse(later)])
    assert summary["preemptions"] == 3.0 and summary["max_waiting"] == 4.0 and summary["mean_waiting"] == 2.0
    assert summary["max_running"] == 10.0 and summary["scrapes"] == 2.0


def test_scraper_thread_polls_and_counts_errors():
    calls = []

    def fetch():
        calls.append(1)
        if len(calls) == 2:
            raise OSError("connection refused")
        return METRICS_TEXT

    with prommetrics.Scraper(fetch, interval_s=0.01) as scraper:
        while len(calls) < 4:
            pass
    assert scraper.errors == 1 and len(scraper.samples) >= 3 and scraper.summary()["max_running"] == 10.0


def test_benchmark_command_and_loopback_only(tmp_path):
    req = servebench.BenchRequest("http://127.0.0.1:8000", "chat@abc", "/models/x", concurrency=3, num_prompts=24,
                                  input_len=128, output_len=64, seed=7)
    cmd = servebench.build_command(req, tmp_path, "bench_1x.json")
    joined = " ".join(cmd[3:])
    for part in ("--dataset-name random", "--random-input-len 128", "--random-output-len 64", "--seed 7",
                 "--max-concurrency 3", "--num-prompts 24", "--percentile-metrics ttft,tpot,itl,e2el",
                 "--metric-percentiles 50,95,99", "--save-result", "--result-filename bench_1x.json",
                 "--base-url http://127.0.0.1:8000", "--request-rate inf"):
        assert part in joined
    assert not servebench.is_loopback("http://staging.example.com:8000")
    with pytest.raises(Exception, match="loopback"):
        servebench.run_level(servebench.BenchRequest("http://10.0.0.5:8000", "m", "t", 1, 1, 8, 8, 0),
                             tmp_path, "x.json", tmp_path / "log")


def test_benchmark_requests_are_bounded_by_the_serving_timeout_and_its_error_is_named(tmp_path):
    """The benchmark's own session would wait 6 hours for an answer: each request gets serving.request_timeout_s."""
    req = servebench.BenchRequest("http://127.0.0.1:8000", "m", "t", 1, 2, 8, 8, 0, request_timeout_s=7.5)
    assert servebench.bench_env(req)["MODELGATE_REQUEST_TIMEOUT_S"] == "7.5"
    assert "aiohttp.ClientTimeout(total=_timeout)" in servebench.build_command(req, tmp_path, "x.json")[2]
    log = tmp_path / "servebench.log"
    log.write_text("Error 0: Traceback (most recent call last):\n  File x\nasyncio.exceptions.CancelledError\n"
                   "\nThe above exception...\nTimeoutError\n==== Serving Benchmark Result ====\nSuccessful: 0\n")
    assert servebench.last_error(log) == "TimeoutError"
    log.write_text("ValueError: Initial test run failed - Please make sure benchmark arguments are correct\n")
    assert servebench.last_error(log).startswith("ValueError: Initial test run failed")
    log.write_text("all fine\n")
    assert servebench.last_error(log) == "no error line in the log"


def test_baseline_keeps_its_five_positional_fields():
    b = Baseline("1", "run", None, {}, {})
    assert b.load is None


def _release(write_release, load):
    data = copy.deepcopy(VALID_RELEASE)
    data["gates"] = {} if load is KeyError else {"load": load}
    return load_release(write_release(data))


def test_gates_load_config(write_release):
    assert _release(write_release, KeyError).load_gate.enabled is False
    empty = _release(write_release, {}).load_gate
    assert empty.enabled and empty.levels == (1, 3, 5) and empty.slo.max_failed == 0
    cfg = _release(write_release, {"peak_concurrency": 2, "levels": [1, 3, 5],
                                   "prompts": {"input_len": 128, "output_len": 64, "requests_per_concurrency": 8},
                                   "slo": {"p95_e2el_ms": 15000}, "price_per_hour": 0.1}).load_gate
    assert [cfg.concurrency(m) for m in cfg.levels] == [2, 6, 10]
    assert cfg.prompts.requests_for(6) == 48 and cfg.slo.p95_e2el_ms == 15000
    assert load_release(REPO / "release.yaml").load_gate.enabled


@pytest.mark.parametrize("load, path", [
    ({"slo": {"p95_e2el_ms": -1}}, "gates.load.slo.p95_e2el_ms"),
    ({"slo": {"p95_e2e_ms": 100}}, "gates.load.slo"),
    ({"peak_concurrency": 0}, "gates.load.peak_concurrency"),
    ({"prompts": {"source": "sharegpt"}}, "gates.load.prompts.source"),
    ({"levels": []}, "gates.load.levels"),
])
def test_bad_gates_load_is_a_one_line_config_error_with_its_path(write_release, load, path):
    with pytest.raises(ConfigError) as info:
        _release(write_release, load)
    assert info.value.path == path and "\n" not in str(info.value)


def test_disabled_load_stage_is_skipped(write_release):
    from pipeline.gate.context import GateContext
    from pipeline.gate.stages import load as loadtest

    release = _release(write_release, {"enabled": False})
    result = loadtest.run(GateContext(release=release, run_dir=REPO, home=REPO))
    assert result.status == Status.SKIPPED


def test_baseline_load_details_come_from_its_report_and_absence_is_tolerated():
    from pipeline.integrations.registry import _load_details

    def report(*stages):
        return {"schema_version": 1, "gate_id": "g", "model_name": "m", "verdict": "passed",
                "candidate": {"source": "git", "repo": "r", "revision": "a" * 40, "uri": "git://r@" + "a" * 40},
                "tracking": {"uri": "u", "experiment": "e", "run_id": "r1"}, "stages": list(stages)}

    details = {"levels": [row()], "fingerprint": {"cpu_count": 2}}
    passed = report({"name": "serve", "status": "passed", "details": {}},
                    {"name": "load", "status": "passed", "details": details})
    assert _load_details(json.dumps(passed).encode())["fingerprint"] == {"cpu_count": 2}
    skipped = report({"name": "load", "status": "skipped", "details": {}})
    assert _load_details(json.dumps(skipped).encode()) is None
    assert _load_details(json.dumps({"stages": passed["stages"]}).encode()) is None  # not a gate report
    assert _load_details(None) is None  # the run holds no report.json
    assert _load_details(b"not json") is None


def test_baseline_comparison_skipped_on_other_hardware_and_compared_on_the_same(write_release):
    from types import SimpleNamespace

    from pipeline.gate.stages.load import compare_baseline

    cfg = _release(write_release, {"regression_pct": 10}).load_gate
    fp = srv.fingerprint("0.32.0", serving=srv.serving_config(COMPILED, {}))
    rows = [row(1, 1, p95_e2el=5000)]

    def ctx(load):
        store = SimpleNamespace(production=lambda name: Baseline("3", "run3", None, {}, {}, load))
        return SimpleNamespace(baseline_store=store, release=SimpleNamespace(model_name="m", alpha=0.05))

    info, failures = compare_baseline(ctx({"levels": rows, "fingerprint": {**fp, "cpu_count": 96}}), cfg, rows, fp)
    assert info["status"] == "skipped" and info["reason"] == "not comparable: CPU count differs" and failures == []
    assert info["differences"] == [f"cpu_count: 96 (baseline) != {fp['cpu_count']} (candidate)"]
    assert slo.comparison_lines(rows, info) == \
        ["1x: not compared with production v3 (run run3) (not comparable: CPU count differs)"]
    info, _ = compare_baseline(ctx(None), cfg, rows, fp)
    assert info["reason"] == "the baseline's gate recorded no load results"
    base = [row(1, 1, p95_e2el=3000)]
    info, failures = compare_baseline(ctx({"levels": base, "fingerprint": fp}), cfg, rows, fp)
    assert info["status"] == "compared" and failures[0].startswith("load 1x: p95_e2el_ms 5000 is 67% above")


def detailed(latencies_s, ttfts_s=None, errors=None, out=16):
    """A `--save-detailed` benchmark result with these per-request latencies (seconds)."""
    n = len(latencies_s)
    return bench(completed=n, latencies=list(latencies_s), ttfts=list(ttfts_s or [0.1] * n),
                 output_lens=[0 if (errors and errors[i]) else out for i in range(n)],
                 errors=list(errors or [""] * n))


def test_per_request_samples_are_kept_from_the_detailed_result_without_failed_requests():
    result = detailed([1.0, 2.0, 0.0], ttfts_s=[0.1, 0.2, 0.0], errors=["", "", "TimeoutError"])
    r = slo.level_summary(1, 2, result)
    assert r["samples"] == {"e2el_ms": [1000.0, 2000.0], "ttft_ms": [100.0, 200.0], "output_tokens": [16, 16]}
    assert "samples" not in row()  # a result saved without details: none
    req = servebench.BenchRequest("http://127.0.0.1:8000", "m", "t", 1, 2, 8, 8, 0)
    assert "--save-detailed" in servebench.build_command(req, Path("."), "x.json")


def _spread(n, seed=3, sigma=0.1):
    import numpy as np

    return list(np.random.default_rng(seed).lognormal(0.0, sigma, n))


def test_per_request_comparison_fails_only_beyond_the_threshold_with_confidence():
    base = slo.level_summary(1, 2, detailed(_spread(24)))
    same = slo.level_summary(1, 2, detailed(_spread(24, seed=4)))
    rec, failures = slo.compare_level(same, base, 20)
    assert failures == [] and rec["method"] == "rank" and rec["verdict"] == "pass"
    assert rec["e2el"]["lower_pct"] < rec["e2el"]["estimate_pct"] < rec["e2el"]["upper_pct"] < 20
    slower = slo.level_summary(1, 2, detailed([1.5 * v for v in _spread(24, seed=4)]))
    rec, failures = slo.compare_level(slower, base, 20)
    assert rec["verdict"] == "fail" and rec["verdicts"] == {"e2el": "fail", "output_tok_s": "fail"}
    assert len(failures) == 2 and failures[0].startswith("load 1x: e2e latency is +5")
    assert "> regression_pct 20" in failures[0] and "< -regression_pct 20" in failures[1]
    # 20% slower on average: the interval straddles the threshold, which is reported, not failed
    near = slo.level_summary(1, 2, detailed([1.2 * v for v in _spread(24, seed=4)]))
    rec, failures = slo.compare_level(near, base, 20)
    assert rec["verdict"] == "inconclusive" and failures == []
    line = slo.comparison_line(rec, "3", "0123456789abcdef")
    assert line.startswith("1x vs production v3 (run 0123456789ab): e2e latency +")
    assert "(regresses above +20%)" in line and "95% one-sided bounds, 24 vs 24 requests: inconclusive" in line


def test_older_production_records_and_too_few_requests_fall_back_to_the_p95_check_and_say_so():
    old = row(1, 2, p95_e2el=3000, tput=100)  # recorded before per-request latencies were kept
    cand = slo.level_summary(1, 2, detailed(_spread(8)), {})
    cand["p95_e2el_ms"] = 4000.0
    rec, failures = slo.compare_level(cand, old, 20)
    assert rec["method"] == "p95" and rec["fallback_reason"] == "production's run recorded no per-request latencies"
    assert rec["verdict"] == "fail" and failures == [
        "load 1x: p95_e2el_ms 4000 is 33% above the baseline's 3000 (regression_pct 20)"]
    assert "one measurement each side, production's run recorded no per-request latencies: p95 e2e +33.3%" in \
        slo.comparison_line(rec, "3")
    tiny = slo.level_summary(1, 2, detailed([1.0, 1.1]))
    rec, _ = slo.compare_level(tiny, tiny, 20)
    assert rec["method"] == "p95"
    assert rec["fallback_reason"].startswith("too few requests for a bound at 95% confidence")
    rec, _ = slo.compare_level(row(3, 6), None, 20)
    assert not rec["compared"] and slo.comparison_line(rec, "3") == \
        "3x: not compared with production v3 (production's gate did not run this level)"


def test_the_stage_reports_each_levels_comparison_and_logs_its_bounds(write_release):
    from types import SimpleNamespace

    from pipeline.core.result import StageResult
    from pipeline.gate.stages.load import compare_baseline, comparison_metrics
    from pipeline.report import views

    cfg = _release(write_release, {"regression_pct": 20}).load_gate
    fp = srv.fingerprint("0.32.0", serving=srv.serving_config(COMPILED, {}))
    base = [slo.level_summary(1, 2, detailed(_spread(24)))]
    rows = [slo.level_summary(1, 2, detailed([1.5 * v for v in _spread(24, seed=4)])),
            slo.level_summary(3, 6, detailed(_spread(24)))]
    store = SimpleNamespace(production=lambda name: Baseline("3", "run3", None, {}, {},
                                                             {"levels": base, "fingerprint": fp}))
    ctx = SimpleNamespace(baseline_store=store, release=SimpleNamespace(model_name="m", alpha=0.05))
    info, failures = compare_baseline(ctx, cfg, rows, fp)
    assert info["confidence"] == 0.95 and [r["level"] for r in info["comparisons"]] == ["1x", "3x"]
    assert len(failures) == 2 and all(f.startswith("load 1x:") for f in failures)
    metrics = comparison_metrics(info)
    assert metrics["1x.vs_production.e2el_change_lower_pct"] > 20
    assert metrics["1x.vs_production.e2el_change_upper_pct"] > metrics["1x.vs_production.e2el_change_pct"]
    assert not any(k.startswith("3x.") for k in metrics)
    stage = StageResult("load", Status.FAILED, details={"levels": rows, "baseline": info})
    lines = views.load_summary(SimpleNamespace(stage=lambda name: stage if name == "load" else None))
    assert any(line.startswith("1x vs production v3 (run run3): e2e latency +5") and line.endswith("regressed")
               for line in lines)
    assert any(line.startswith("3x: not compared with production v3") for line in lines)


def test_request_rate_levels_are_compared_per_request_with_productions_at_the_same_rate_and_burstiness(
        write_release):
    from types import SimpleNamespace

    from pipeline.checks import goodput
    from pipeline.gate.stages.load import compare_baseline, comparison_metrics

    cfg = _release(write_release, {"regression_pct": 20}).load_gate
    fp = srv.fingerprint("0.32.0", serving=srv.serving_config(COMPILED, {}))

    def rate_row(rate, latencies, burstiness=1.0, keep_samples=True):
        return goodput.rate_summary(rate, burstiness, detailed(latencies), cfg.slo, keep_samples=keep_samples)

    assert rate_row(2, _spread(24))["samples"]["e2el_ms"] and "samples" not in rate_row(2, _spread(24),
                                                                                          keep_samples=False)
    base = {"levels": [slo.level_summary(1, 2, detailed(_spread(24)))],
            "rate_levels": [rate_row(2, _spread(24)), rate_row(4, _spread(24))], "fingerprint": fp}
    rows = [slo.level_summary(1, 2, detailed(_spread(24, seed=4))),
            rate_row(2, [1.5 * v for v in _spread(24, seed=4)]),  # 1.5x slower at the same 2 req/s
            rate_row(4, _spread(24, seed=5), burstiness=0.5)]      # other arrivals: not comparable
    store = SimpleNamespace(production=lambda name: Baseline("3", "run3", None, {}, {}, base))
    ctx = SimpleNamespace(baseline_store=store, release=SimpleNamespace(model_name="m", alpha=0.05))
    info, failures = compare_baseline(ctx, cfg, rows, fp)
    recs = {r["level"]: r for r in info["comparisons"]}
    assert recs["1x"]["verdict"] == "pass"
    assert recs["2rps"]["method"] == "rank" and recs["2rps"]["verdict"] == "fail"
    assert recs["2rps"]["e2el"]["lower_pct"] > 20
    assert failures and all(f.startswith("load 2rps:") for f in failures)
    assert not recs["4rps"]["compared"] and recs["4rps"]["reason"] == \
        "production ran 4rps at 4 req/s (burstiness 1), this gate at 4 req/s (burstiness 0.5)"
    assert comparison_metrics(info)["2rps.vs_production.e2el_change_lower_pct"] > 20
    lines = slo.comparison_lines(rows, info)
    assert lines[1].startswith("2rps vs production v3 (run run3): e2e latency +") and lines[1].endswith("regressed")
    assert set(info["levels"]) == {"1x", "2rps", "4rps"}
    # with a knee on both sides: shown in the report beside production's, and no failure added for it
    knee = {"rate": 2.0, "first_failing": 4.0, "steps": [], "elapsed_s": 1.0, "stopped": "precision reached"}
    base["knee"], base["goodput_limits_ms"] = {"rate": 4.0, "first_failing": 8.0, "steps": []}, goodput.limits(cfg.slo)
    info, with_knee = compare_baseline(ctx, cfg, rows, fp, knee)
    assert with_knee == failures and info["knee"]["relation"] == "lower"
    from pipeline.core.result import StageResult
    from pipeline.report import views

    stage = StageResult("load", Status.FAILED, details={"levels": rows[:1], "rate_levels": rows[1:], "knee": knee,
                                                         "baseline": info})
    shown = views.load_summary(SimpleNamespace(stage=lambda name: stage if name == "load" else None))
    assert any(line.startswith("2rps vs production v3 (run run3): e2e latency +") for line in shown)
    assert "knee vs production v3: [2, 4) vs [4, 8) req/s: lower (this gate missed the SLOs at 4 req/s, which " \
           "production v3 met); shown, not gated: one search each side, no confidence bound" in shown


def test_the_knee_is_shown_beside_productions_never_gated_and_only_against_the_same_limits():
    from pipeline.checks import goodput

    limits = {"e2el": 5000.0}
    knee = {"rate": 2.0, "first_failing": 4.0, "steps": []}
    assert goodput.knee_comparison(knee, None, limits, None) == {
        "compared": False, "interval": [2.0, 4.0], "reason": "production's gate ran no knee search"}
    lower = goodput.knee_comparison(knee, {"rate": 4.0, "first_failing": 8.0}, limits, {"e2el": 5000})
    assert lower["relation"] == "lower" and lower["gated"] is False
    line = goodput.knee_comparison_line(lower, "3")
    assert line == ("knee vs production v3: [2, 4) vs [4, 8) req/s: lower (this gate missed the SLOs at 4 req/s, "
                    "which production v3 met); shown, not gated: one search each side, no confidence bound")
    assert goodput.knee_comparison(knee, {"rate": 1.0, "first_failing": 2.0}, limits, limits)["relation"] == "higher"
    assert goodput.knee_comparison(knee, {"rate": 3.0, "first_failing": 6.0}, limits, limits)["relation"] == \
        "overlapping"
    other = goodput.knee_comparison(knee, {"rate": 3.0, "first_failing": 6.0}, limits, {"e2el": 1000.0})
    assert not other["compared"] and "other limits" in goodput.knee_comparison_line(other)
