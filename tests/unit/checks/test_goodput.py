"""Goodput (vLLM's --goodput semantics), request-rate levels, the bounded knee search and the goodput-limited cost
(pipeline/checks/goodput.py); gates.load's rate and knee config; the benchmark command of a rate level; the
renderings of rate levels, goodput and the knee."""

from __future__ import annotations

import copy
import json
import math

import pytest

from pipeline.checks import goodput
from pipeline.config.release import LoadKnee, LoadSlo, load_release
from pipeline.errors import ConfigError
from pipeline.report import console, html, markdown
from pipeline.report.document import GateReport
from pipeline.tools import servebench
from tests.support.paths import REPO
from tests.support.releases import VALID_RELEASE


def detailed(latencies, ttfts, output_lens, errors=None, duration=10.0, **extra):
    """A benchmark result as `vllm bench serve --save-detailed` writes it (seconds, tokens)."""
    n = len(latencies)
    return {"num_prompts": n, "completed": sum(1 for e in (errors or [""] * n) if not e),
            "failed": sum(1 for e in (errors or [""] * n) if e), "duration": duration, "latencies": latencies,
            "ttfts": ttfts, "output_lens": output_lens, "errors": errors or [""] * n,
            "request_throughput": n / duration, "output_throughput": sum(output_lens) / duration, **extra}


def test_goodput_counts_requests_within_every_limit_as_vllm_does():
    # request: e2el s, ttft s, output tokens -> ttft/tpot/e2el ms
    result = detailed(
        latencies=[1.0, 2.0, 0.9, 0.5, 3.0, 1.2],
        ttfts=[0.1, 0.1, 0.6, 0.1, 0.1, 0.1],
        output_lens=[10, 10, 10, 1, 0, 12],
        errors=["", "", "", "", "timeout", ""])
    per = goodput.request_metrics(result)
    assert per[4] is None  # failed: never good
    assert per[0]["tpot"] == pytest.approx(100.0)  # (1.0 - 0.1) / 9 s
    assert per[3]["tpot"] == 0.0  # one output token: tpot 0, as vLLM counts it
    limits = {"ttft": 500.0, "tpot": 100.0, "e2el": 1500.0}
    g = goodput.goodput(result, limits)
    # good: 0 (tpot exactly at its limit counts, <= as vLLM's `s >= r`), 3 (one token), 5 (tpot 100 ms); not
    # 1 (e2el 2000 ms), 2 (ttft 600 ms), 4 (failed)
    assert g["good_requests"] == 3 and g["goodput"] == pytest.approx(0.3)
    assert g["good_output_throughput"] == pytest.approx((10 + 1 + 12) / 10.0)
    assert g["good_fraction"] == pytest.approx(3 / 6)


def test_without_latency_slos_every_completed_request_is_good_and_without_details_nothing_is_counted():
    result = detailed([1.0, 2.0], [0.1, 0.2], [5, 5], errors=["", "boom"], duration=4.0)
    assert goodput.goodput(result, {}) == {"good_requests": 1, "goodput": 0.25, "good_output_throughput": 1.25,
                                           "good_fraction": 0.5, "goodput_limits_ms": {}}
    assert goodput.goodput({"duration": 4.0, "completed": 2}, {"e2el": 1.0}) == {}


def test_limits_are_the_slo_values_in_vllms_goodput_form():
    slo = LoadSlo(p95_e2el_ms=5000, p95_tpot_ms=80, min_output_throughput=10)
    assert goodput.limits(slo) == {"tpot": 80.0, "e2el": 5000.0}
    assert goodput.goodput_args(slo) == ["--goodput", "tpot:80", "e2el:5000"]
    assert goodput.goodput_args(LoadSlo()) == []


def test_a_rate_level_is_judged_on_latency_and_failures_naming_the_level_not_on_throughput():
    slo = LoadSlo(p95_e2el_ms=500, min_output_throughput=1000)
    ok = goodput.rate_summary(2, 1.0, detailed([0.2, 0.3], [0.05, 0.05], [8, 8], p95_e2el_ms=300.0), slo)
    assert ok["level"] == "2rps" and ok["kind"] == "rate" and ok["request_rate"] == 2 and "concurrency" not in ok
    assert goodput.check_rate_level(ok, slo) == []  # 1.6 tok/s is what 2 req/s offers: not a capacity miss
    slow = goodput.rate_summary(2, 1.0, detailed([0.9, 0.95], [0.05, 0.05], [8, 8], p95_e2el_ms=948.0), slo)
    assert goodput.check_rate_level(slow, slo) == ["load 2rps: p95_e2el_ms 948 > SLO 500"]
    assert slow["goodput"] == 0 and slow["good_requests"] == 0


def test_the_cost_comes_from_the_goodput_limited_throughput_of_levels_within_slo():
    slo = LoadSlo(p95_e2el_ms=1000)
    rows = [{"level": "1x", "failed": 0, "num_prompts": 4, "p95_e2el_ms": 500.0, "output_throughput": 100.0,
             "good_output_throughput": 90.0},
            {"level": "5x", "failed": 0, "num_prompts": 4, "p95_e2el_ms": 3000.0, "output_throughput": 400.0,
             "good_output_throughput": 20.0},
            {"level": "4rps", "kind": "rate", "failed": 0, "num_prompts": 4, "p95_e2el_ms": 800.0,
             "output_throughput": 150.0, "good_output_throughput": 140.0}]
    assert goodput.costing_throughput(rows, slo) == 140.0  # the 5x level misses the SLO
    older = [{"level": "1x", "failed": 0, "num_prompts": 4, "p95_e2el_ms": 500.0, "output_throughput": 100.0}]
    assert goodput.costing_throughput(older, slo) == 100.0  # recorded before goodput: its throughput
    none_good = [{**rows[1], "good_output_throughput": 0.0}]
    assert goodput.costing_throughput(none_good, slo) is None  # nothing sellable within the SLO: no cost


class FakeServer:
    """Meets the SLOs up to `capacity` req/s; every step takes its arrivals plus `overhead` seconds of the clock."""

    def __init__(self, capacity: float, overhead: float = 5.0, requests: int = 16):
        self.capacity, self.overhead, self.requests, self.now, self.rates = capacity, overhead, requests, 0.0, []

    def clock(self) -> float:
        return self.now

    def requests_for(self, rate: float) -> int:
        return self.requests

    def measure(self, rate: float) -> dict:
        self.rates.append(rate)
        self.now += self.requests / rate + self.overhead
        return {"level": goodput.rate_label(rate), "request_rate": rate, "ok": rate <= self.capacity,
                "goodput": min(rate, self.capacity)}

    def search(self, cfg: LoadKnee) -> dict:
        return goodput.search_knee(self.measure, lambda row: row["ok"], cfg, requests_for=self.requests_for,
                                   clock=self.clock)


@pytest.mark.parametrize("capacity", [0.3, 1.0, 1.7, 5.3, 11.0, 40.0])
def test_the_knee_search_brackets_the_capacity_within_its_precision(capacity):
    cfg = LoadKnee(start_rate=1, max_rate=64, growth=2, precision=0.25, max_steps=12, max_seconds=1e6)
    server = FakeServer(capacity)
    knee = server.search(cfg)
    assert knee["bracketed"] and knee["stopped"] == "precision 0.25 reached", knee["stopped"]
    assert knee["rate"] <= capacity < knee["first_failing"]
    assert knee["first_failing"] / knee["rate"] <= 1.25
    assert [s["within_slo"] for s in knee["steps"]] == [r <= capacity for r in server.rates]
    assert len(server.rates) == len(set(server.rates))  # never measures a rate twice


def test_the_knee_search_stops_at_max_rate_when_nothing_fails():
    server = FakeServer(capacity=1000)
    knee = server.search(LoadKnee(start_rate=2, growth=8, max_rate=16, max_steps=5))
    assert server.rates == [2, 16] and knee["rate"] == 16 and knee["first_failing"] is None
    assert knee["stopped"] == "max_rate 16 req/s met the SLOs" and not knee["bracketed"]


def test_the_knee_search_is_bounded_in_steps():
    server = FakeServer(capacity=5.3)
    knee = server.search(LoadKnee(start_rate=1, growth=2, max_steps=3, max_seconds=1e6))
    assert server.rates == [1, 2, 4] and knee["stopped"] == "max_steps 3 reached"
    assert knee["rate"] == 4 and knee["first_failing"] is None


def test_the_knee_search_is_bounded_in_time_and_starts_no_step_that_would_overrun():
    server = FakeServer(capacity=1000, overhead=5.0, requests=16)
    # steps take 16/r + 5 s: 1 -> 21 s, 2 -> 13 s (34 s), 4 -> 9 s (43 s), 8 -> 7 s would end at 50 > 45
    knee = server.search(LoadKnee(start_rate=1, growth=2, max_steps=20, max_seconds=45))
    assert server.rates == [1, 2, 4] and knee["stopped"].startswith("max_seconds 45: the next step (8 req/s")
    assert server.now <= 45


def test_an_impossible_slo_finds_no_rate_and_fails_a_min_rate_naming_it():
    server = FakeServer(capacity=0.0)
    knee = server.search(LoadKnee(start_rate=1, growth=2, max_steps=3, min_rate=0.5))
    assert server.rates == [1, 0.5, 0.25] and knee["rate"] is None and knee["first_failing"] == 0.25
    (failure,) = goodput.knee_failures(knee)
    assert failure.startswith("load knee: no rate within SLO down to 0.25 req/s; 3 step(s)")
    assert failure.endswith("< min_rate 0.5 req/s")


def test_min_rate_fails_only_below_the_knee():
    server = FakeServer(capacity=5.3)
    knee = server.search(LoadKnee(start_rate=1, max_steps=12, min_rate=4))
    assert goodput.knee_failures(knee) == []
    knee_low = FakeServer(capacity=3).search(LoadKnee(start_rate=1, max_steps=12, min_rate=4))
    (failure,) = goodput.knee_failures(knee_low)
    assert f"highest rate within SLO {knee_low['rate']:.3g} req/s, first failing" in failure
    assert goodput.knee_failures({**knee_low, "min_rate": None}) == []


# -- config --------------------------------------------------------------------------------------------------


def release_with(write_release, load):
    data = copy.deepcopy(VALID_RELEASE)
    data["gates"] = {"load": load}
    return write_release(data)


def test_rates_burstiness_and_the_knee_are_configured_beside_the_levels(write_release):
    cfg = load_release(release_with(write_release, {
        "levels": [], "rates": [0.5, 2], "burstiness": 0.5, "slo": {"p95_e2el_ms": 5000},
        "prompts": {"source": "suites"}, "knee": {"start_rate": 1, "max_rate": 8, "min_rate": 2}})).load_gate
    assert cfg.levels == () and cfg.rates == (0.5, 2.0) and cfg.burstiness == 0.5
    assert cfg.knee == LoadKnee(start_rate=1, max_rate=8, min_rate=2) and cfg.prompts.source == "suites"
    assert cfg.prompts.requests_for_rate(0.5) == 16 and cfg.prompts.requests_for_rate(4) == 40


@pytest.mark.parametrize("load, path, words", [
    ({"levels": []}, "gates.load.levels", "no load to run"),
    ({"knee": {"start_rate": 1}}, "gates.load.slo", "needs a latency SLO"),
    ({"slo": {"p95_e2el_ms": 1}, "knee": {"start_rate": 4, "max_rate": 2}}, "gates.load.knee.max_rate",
     "below start_rate"),
    ({"knee": {"step": 1}}, "gates.load.knee", "unknown key 'step'"),
    ({"rates": [0]}, "gates.load.rates[0]", "less than or equal to the minimum of 0"),
    ({"knee": {"growth": 1}}, "gates.load.knee.growth", "less than or equal to the minimum of 1"),
])
def test_bad_rate_and_knee_config_names_the_path(write_release, load, path, words):
    with pytest.raises(ConfigError) as err:
        load_release(release_with(write_release, load))
    assert f": {path}: " in str(err.value) and words in str(err.value), str(err.value)


# -- the benchmark command -----------------------------------------------------------------------------------


def test_a_rate_level_runs_open_loop_with_poisson_arrivals_and_vllms_goodput(tmp_path):
    req = servebench.BenchRequest("http://127.0.0.1:8000", "chat@abc", "/models/x", concurrency=None,
                                  num_prompts=20, input_len=64, output_len=32, seed=0, request_rate=2.0,
                                  burstiness=0.5, goodput=("--goodput", "e2el:5000"))
    cmd = servebench.build_command(req, tmp_path, "bench_2rps.json")
    assert "--max-concurrency" not in cmd
    assert cmd[cmd.index("--request-rate") + 1] == "2.0" and cmd[cmd.index("--burstiness") + 1] == "0.5"
    assert cmd[cmd.index("--goodput") + 1] == "e2el:5000"
    assert servebench.timeout_for(req) == pytest.approx(120 + 20 / 2 + 120)
    assert req.what == "2 req/s"


def test_suite_prompts_go_through_the_chat_endpoint_from_a_dataset_file(tmp_path):
    req = servebench.BenchRequest("http://127.0.0.1:8000", "chat@abc", "/models/x", concurrency=2, num_prompts=4,
                                  input_len=64, output_len=16, seed=0, chat_dataset=str(tmp_path / "p.jsonl"))
    cmd = servebench.build_command(req, tmp_path, "bench_1x.json")
    assert cmd[cmd.index("--backend") + 1] == "openai-chat"
    assert cmd[cmd.index("--endpoint") + 1] == "/v1/chat/completions" and "--random-input-len" not in cmd
    assert servebench.bench_env(req)["MODELGATE_CHAT_DATASET"] == str(tmp_path / "p.jsonl")
    assert "_serve.get_samples = _samples" in cmd[2]  # the snippet samples the suites' messages


# -- renderings ----------------------------------------------------------------------------------------------


def report_with_rates(tmp_path) -> GateReport:
    data = json.loads((REPO / "tests/fixtures/reports/rejected-load/report.json").read_text())
    load = next(s for s in data["stages"] if s["name"] == "load")
    step = {"level": "4rps", "kind": "rate", "request_rate": 4.0, "completed": 8, "failed": 0, "num_prompts": 8,
            "p50_e2el_ms": 700.0, "p95_e2el_ms": 900.0, "p99_e2el_ms": 950.0, "output_throughput": 60.0,
            "request_throughput": 3.9, "goodput": 3.9, "good_fraction": 1.0, "server": {}}
    load["details"].update({
        "goodput_limits_ms": {"e2el": 5000.0},
        "rate_levels": [{**step, "level": "2rps", "request_rate": 2.0, "goodput": 1.5, "good_fraction": 0.75}],
        "knee": {"rate": 4.0, "first_failing": 5.66, "stopped": "precision 0.25 reached", "elapsed_s": 61.0,
                 "min_rate": None, "steps": [{**step, "within_slo": True},
                                             {**step, "level": "5.66rps", "request_rate": 5.66, "within_slo": False,
                                              "goodput": 2.0}]}})
    return GateReport.from_dict(data)


def test_every_rendering_shows_the_rate_levels_their_goodput_and_the_knee(tmp_path):
    report = report_with_rates(tmp_path)
    knee = "knee: highest rate within SLO 4 req/s, first failing 5.66 req/s (interval [4, 5.66)), goodput there"
    md, page, text = markdown.render(report), html.render(report), console.render(report)
    assert "| 2rps | 2 req/s |" in md and "| 1\\.50 \\(75%\\) |" in md
    assert "| knee 4rps within SLO | 4 req/s |" in md and "knee 5\\.66rps misses SLO" in md
    assert "<td>2rps</td><td>2 req/s</td>" in page and "<td>knee 5.66rps misses SLO</td>" in page
    assert "goodput: completed requests with e2e latency &lt;= 5000 ms" in page
    for rendered in (page, text):
        assert knee in rendered
    assert "goodput req/s" in text and "2rps" in text and "1.50 (75%)" in text
    assert report.load_results().knee is not None and report.load_results().knee.rate == 4.0
    assert math.isclose(report.load_results().rate_levels[0].goodput, 1.5)


def test_older_reports_without_rate_levels_render_as_before(tmp_path):
    data = json.loads((REPO / "tests/fixtures/reports/rejected-load/report.json").read_text())
    report = GateReport.from_dict(data)
    assert report.load_results().rate_levels == () and report.load_results().knee is None
    md = markdown.render(report)
    assert "| 5x | 10 |" in md and "knee" not in md and "goodput:" not in md


def test_the_plot_shows_both_kinds_of_load_with_goodput_and_the_slo_lines(tmp_path):
    from pipeline.gate.stages import load

    def row(**kw):
        return {"p50_e2el_ms": 300.0, "p95_e2el_ms": 400.0, "p99_e2el_ms": 450.0, "p95_ttft_ms": 80.0,
                "goodput": 1.0, "request_throughput": 1.1, **kw}

    knee = {"rate": 2.0, "first_failing": 4.0, "steps": [row(level="2rps", request_rate=2.0, within_slo=True),
                                                         row(level="4rps", request_rate=4.0, within_slo=False)]}
    path = load.plot([row(level="1x", concurrency=1)], [row(level="1rps", request_rate=1.0)], knee,
                     LoadSlo(p95_e2el_ms=500, p95_ttft_ms=100), tmp_path / "plot.png", "title")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    only_rates = load.plot([], [row(level="1rps", request_rate=1.0)], None, LoadSlo(), tmp_path / "r.png", "t")
    assert only_rates.stat().st_size > 0


def test_suite_prompts_are_every_cases_chat_messages_in_a_seeded_order(tmp_path, write_release):
    from types import SimpleNamespace

    from pipeline.config.suite import load_suites
    from pipeline.gate.stages import load

    cfg = load_release(release_with(write_release, {"prompts": {"source": "suites", "output_len": 12, "seed": 3}}))
    ctx = SimpleNamespace(release=SimpleNamespace(root=REPO, format_gate=SimpleNamespace(prompts_dir="prompts")))
    path = load.suite_dataset(ctx, cfg.load_gate, tmp_path)
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    cases = {f"{s.name}/{c.id}": c.messages_payload() for s in load_suites(REPO / "prompts") for c in s.cases}
    assert sorted(rec["case"] for rec in lines) == sorted(cases) and len(lines) > 1
    assert all(rec["messages"] == cases[rec["case"]] and rec["output_tokens"] == 12 for rec in lines)
    assert [rec["case"] for rec in lines] != list(cases)  # shuffled with prompts.seed
    assert load.suite_dataset(ctx, load_release(release_with(write_release, {})).load_gate, tmp_path) is None
