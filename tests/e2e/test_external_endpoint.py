"""`serving.mode: external`: the gate uses an already running OpenAI-compatible endpoint (a staging
deployment) instead of spawning vLLM. Here that endpoint is a real vLLM server started once for the module.
The load stage's A/A test runs on the same boot (one server for the module: no boot of its own); its first run is
production's recorded load, against which a really slower candidate (the `deep` variant, on one more boot with
the same serving configuration) is rejected."""

from __future__ import annotations

import re

import pytest

from pipeline.config.release import Pin, Serving
from pipeline.model.fetch import fetch
from pipeline.serving.vllm_server import VllmServer
from tests.support import cli
from tests.support.loadstage import run_load_stage
from tests.support.releases import DEMO_MODEL, DEMO_SERVING, write_demo_release

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def staging_server(demo_hub, tmp_path_factory):
    """A running vLLM server (the VllmServer) for the demo pin, served under the name the gate expects
    (chat@<rev12>)."""
    v = demo_hub["variants"]["instruct"]
    pin = Pin("git", demo_hub["repo_path"], v["revision"], v["files"])
    home = tmp_path_factory.mktemp("staging")
    model_dir = fetch(pin, demo_hub["repo_path"], home, file="staging", progress=lambda m: None)
    server = VllmServer(model_dir.path, f"chat@{pin.short}", STAGING_SERVING, home / "server.log",
                        progress=lambda m: None)
    with server:
        yield server


# the staging server's configuration; the slower candidate is served with the very same one
STAGING_SERVING = Serving(**DEMO_SERVING)


@pytest.fixture(scope="module")
def staging(staging_server):
    """The running server's endpoint."""
    return staging_server.endpoint


KEY_ENV = "STAGING_API_KEY"


def external_release(directory, demo_hub, url, prefix="chat"):
    return write_demo_release(directory, demo_hub, model={"name": DEMO_MODEL, "served_name_prefix": prefix},
                              serving={"mode": "external", "external_url": url, "api_key_env": KEY_ENV})


def test_external_endpoint_is_probed_not_spawned(staging, demo_hub, mlflow_server, tmp_path):
    config = external_release(tmp_path / "team", demo_hub, staging.base_url + "/v1")
    proc = cli.run_gate(config, mlflow_server, tmp_path / "home", env={KEY_ENV: staging.api_key}, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    assert staging.api_key not in proc.stdout + proc.stderr
    assert "starting vLLM" not in proc.stderr
    assert "streamed TTFT" in proc.stderr
    assert staging.served_name in proc.stdout


def test_external_endpoint_serving_another_model_is_an_infra_error(staging, demo_hub, mlflow_server, tmp_path):
    config = external_release(tmp_path / "team", demo_hub, staging.base_url, prefix="other")
    proc = cli.run_gate(config, mlflow_server, tmp_path / "home", env={KEY_ENV: staging.api_key}, timeout=600)
    assert proc.returncode == 3, proc.stdout + proc.stderr[-3000:]
    assert "the server does not serve 'other@" in proc.stdout and staging.served_name in proc.stdout


def test_staging_server_requires_its_api_key(staging):
    """A spawned server answers /v1 only with its per-run key; the key is in neither argv nor the log."""
    import httpx

    url = f"{staging.base_url}/v1/models"
    assert httpx.get(url, timeout=10).status_code == 401
    assert httpx.get(url, headers={"Authorization": "Bearer wrong-key-0123456789"}, timeout=10).status_code == 401
    ok = httpx.get(url, headers=staging.headers(), timeout=10)
    assert ok.status_code == 200 and staging.served_name in ok.text
    assert httpx.get(f"{staging.base_url}/health", timeout=10).status_code == 200  # liveness stays open
    assert staging.api_key not in " ".join(staging.command)
    assert staging.api_key not in open(f"/proc/{staging.pid}/cmdline", "rb").read().decode(errors="replace")
    assert staging.api_key not in staging.log_file.read_text(errors="replace")


def test_external_endpoint_without_its_key_is_bad_input(staging, demo_hub, mlflow_server, tmp_path):
    config = external_release(tmp_path / "team", demo_hub, staging.base_url)
    proc = cli.run_gate(config, mlflow_server, tmp_path / "home", env={KEY_ENV: None}, timeout=300)
    assert proc.returncode == 2, proc.stdout + proc.stderr[-3000:]
    assert proc.stderr.strip().splitlines()[-1].startswith(f"modelgate: error: {config}: serving.api_key_env: ")


def test_request_profile_leaves_parameters_to_the_real_servers_defaults(staging, tmp_path):
    """A case sets max_tokens 8; production's clients leave max_tokens to the server (serving.request_profile):
    the gate's request then carries no max_tokens, and vLLM answers with its own default length."""
    from pipeline.config.request_profile import RequestProfile
    from pipeline.config.suite import load_suites
    from pipeline.gate.stages import format as formatcheck

    prompts = tmp_path / "prompts"
    prompts.mkdir()
    (prompts / "story.yaml").write_text(
        "suite: story\ndefaults:\n  sampling: {temperature: 0, max_tokens: 8}\ncases:\n"
        "  - id: long\n    messages:\n      - {role: user, content: 'Describe a cat in three sentences.'}\n"
        "    expect: {max_chars: 100000}\n", encoding="utf-8")  # a few dozen tokens (a long story: ~90 s of CI)
    suites = load_suites(prompts)

    def run(profile, name):
        outcome = formatcheck.evaluate(staging, suites, concurrency=1, out_dir=tmp_path / name,
                                       progress=lambda m: None, profile=profile)
        (row,) = outcome.cases
        return row

    as_written = run(None, "cases")
    left = run(RequestProfile(server_default=("max_tokens",)), "profile")
    assert as_written["request_params"] == {"temperature": 0, "max_tokens": 8}
    assert left["request_params"] == {"temperature": 0}
    assert as_written["completion_tokens"] == 8 and as_written["finish_reason"] == "length"
    assert left["completion_tokens"] > 8, left


# request-rate levels and the knee search on the module's server (no boot of their own): 5 benchmark runs
RATE_LOAD = {"levels": [], "rates": [1], "burstiness": 1,
             "prompts": {"source": "suites", "output_len": 8, "requests_per_level": 6, "seed": 1},
             "slo": {"p95_e2el_ms": 60000, "p95_ttft_ms": 30000}, "price_per_hour": 0.10}
# The knee search's SLO and rates are set relative to the server's unloaded TTFT, measured in the test (any machine).
# Its steps send the same prompts (one seed); vLLM caches a prompt's full KV blocks (128 tokens on CPU) except its last
# token, so prompts of one block are never served from the prefix cache and every step prefills all of them.
KNEE_PROMPT_TOKENS = 128
# Sizes keep the search to ~35 unloaded TTFTs of serving (about 2 minutes on 2 cores): a 4-step search of 48
# requests per step took 520-550 s in CI and was stopped by max_seconds before its 4th step.
KNEE_REQUESTS = 16  # per step: all at once they queue behind each other's prefills (measured: p95 ~6 unloaded TTFTs)
KNEE_TTFT_FACTOR = 3  # SLO: p95 TTFT within this many unloaded TTFTs
KNEE_START_LOAD = 1 / 1.2  # the start rate: one request every 1.2 unloaded TTFTs (a prefill is done before the next)
KNEE_BURSTINESS = 100  # near-regular arrivals (gamma shape 100, gaps ~±10%): at the start rate no two overlap
KNEE_BURST = 16  # max_rate = start x this: the whole step arrives within about one prefill
KNEE_STEPS = 3  # start, max_rate, then one bisection at their geometric midpoint


def unloaded_ttft_ms(endpoint, prompt_tokens: int, samples: int = 5) -> float:
    """The server's TTFT without load: the shortest time of one-token completions of distinct `prompt_tokens`-token
    prompts (random token ids: no prefix-cache hits) sent one at a time, after one that warms the server up (other
    work on the machine only adds to a time: the shortest is the least disturbed)."""
    import random
    import time

    import httpx

    rng = random.Random(20261201)
    times = []
    for i in range(samples + 1):
        body = {"model": endpoint.served_name, "prompt": [rng.randrange(1000, 40000) for _ in range(prompt_tokens)],
                "max_tokens": 1, "temperature": 0}
        started = time.perf_counter()
        answer = httpx.post(f"{endpoint.base_url}/v1/completions", json=body, headers=endpoint.headers(), timeout=60)
        elapsed = time.perf_counter() - started
        answer.raise_for_status()
        assert answer.json()["usage"]["prompt_tokens"] == prompt_tokens
        if i:
            times.append(1000.0 * elapsed)
    return min(times)


def prefix_cache_hits(endpoint) -> float:
    import httpx

    from pipeline.serving.prometheus import parse

    text = httpx.get(f"{endpoint.base_url}/metrics", headers=endpoint.headers(), timeout=10).text
    return parse(text)["vllm:prefix_cache_hits_total"]


def test_load_rate_levels_goodput_and_the_knee_search_on_the_real_server(staging_server, demo_hub, tmp_path,
                                                                          capsys):
    """A Poisson rate level with the prompt suites' chat messages and its goodput (equal to vLLM's own --goodput
    count of the same requests); then a knee search that brackets the server's capacity: its TTFT SLO is a multiple
    of the unloaded TTFT measured here, the start rate passes (requests one after another), max_rate (all at once)
    misses it, and the search bisects the interval at geometric midpoints until max_steps."""
    import json
    import math

    from tests.support.releases import copy_project_inputs

    team = tmp_path / "team"
    config = write_demo_release(team, demo_hub, gates={"load": RATE_LOAD})
    copy_project_inputs(team, "prompts")
    result = run_load_stage(staging_server, config, tmp_path / "run", production=None)
    assert result.status.value == "passed", result.reasons
    (row,) = result.details["rate_levels"]
    assert row["level"] == "1rps" and row["completed"] == 6 and row["failed"] == 0, row
    assert row["good_requests"] == 6 and row["goodput"] == pytest.approx(row["vllm_request_goodput"], rel=1e-9)
    bench = json.loads(open(row["result_file"]).read())
    assert bench["request_rate"] == 1 and bench["burstiness"] == 1 and bench["max_concurrency"] is None
    assert bench["backend"] == "openai-chat" and len(set(bench["input_lens"])) > 1  # real chat messages
    assert bench["output_lens"] == [8] * 6
    assert result.metrics["1rps.goodput"] > 0 and result.metrics["cost_per_1m_output_tokens"] > 0
    assert result.details["knee"] is None and not any(k.startswith("knee.") for k in result.metrics)

    unloaded = unloaded_ttft_ms(staging_server.endpoint, KNEE_PROMPT_TOKENS)
    slo_ms = round(KNEE_TTFT_FACTOR * unloaded)
    start = float(f"{KNEE_START_LOAD * 1000 / unloaded:.2g}")
    knee_load = {"levels": [], "burstiness": KNEE_BURSTINESS,
                 "prompts": {"input_len": KNEE_PROMPT_TOKENS, "output_len": 2, "requests_per_level": KNEE_REQUESTS,
                             "seed": 1},
                 "slo": {"p95_ttft_ms": slo_ms},
                 "knee": {"start_rate": start, "growth": KNEE_BURST, "max_rate": start * KNEE_BURST,
                          "precision": 0.25, "max_steps": KNEE_STEPS, "max_seconds": 600}}
    config = write_demo_release(tmp_path / "knee-team", demo_hub, gates={"load": knee_load})
    hits_before = prefix_cache_hits(staging_server.endpoint)
    result = run_load_stage(staging_server, config, tmp_path / "knee-run", production=None)
    knee, steps = result.details["knee"], result.details["knee"]["steps"]
    with capsys.disabled():
        print(f"\nknee on the real server: unloaded TTFT {unloaded:.0f} ms, SLO p95 TTFT {slo_ms} ms; steps " +
              ", ".join(f"{s['request_rate']:g} req/s p95 TTFT {s['p95_ttft_ms']:.0f} ms "
                        f"{'within' if s['within_slo'] else 'missed'}" for s in steps) +
              f"; {knee['elapsed_s']:.0f} s")
    assert prefix_cache_hits(staging_server.endpoint) == hits_before  # every step prefilled every prompt
    assert result.status.value == "passed", result.reasons  # no min_rate: the knee is reported, not gated
    assert knee["bracketed"] is True and knee["rate"] < knee["first_failing"], knee
    for s in steps:  # each step's verdict is its own row's p95 TTFT against the SLO; every request completed
        assert s["completed"] == KNEE_REQUESTS and s["failed"] == 0, s
        assert s["within_slo"] is (s["p95_ttft_ms"] <= slo_ms), s
        bench = json.loads(open(s["result_file"]).read())
        assert bench["input_lens"] == [KNEE_PROMPT_TOKENS] * KNEE_REQUESTS and bench["burstiness"] == KNEE_BURSTINESS
    assert [s["request_rate"] for s in steps[:2]] == [start, start * KNEE_BURST]
    assert steps[0]["within_slo"] and not steps[1]["within_slo"], steps
    lo, hi = start, start * KNEE_BURST
    for s in steps[2:]:  # bisection at the geometric midpoint of the interval so far
        assert s["request_rate"] == float(f"{math.sqrt(lo * hi):.3g}"), (s["request_rate"], lo, hi)
        lo, hi = (s["request_rate"], hi) if s["within_slo"] else (lo, s["request_rate"])
    assert len(steps) == KNEE_STEPS and knee["stopped"] == f"max_steps {KNEE_STEPS} reached", knee["stopped"]
    assert (knee["rate"], knee["first_failing"]) == (lo, hi)
    assert all(s["within_slo"] for s in steps if s["request_rate"] <= knee["rate"])
    assert not any(s["within_slo"] for s in steps if s["request_rate"] >= knee["first_failing"])
    assert result.metrics["knee.rate"] == knee["rate"] and result.metrics["knee.first_failing_rate"] == hi
    assert result.metrics["knee.steps"] == KNEE_STEPS
    interval = f"first failing {hi:.3g} req/s (interval [{lo:.3g}, {hi:.3g}))"
    assert any(r.startswith(f"knee: highest rate within SLO {lo:.3g} req/s, {interval}") for r in result.reasons), \
        result.reasons
    assert open(result.artifacts["latency_vs_concurrency.png"], "rb").read(8) == b"\x89PNG\r\n\x1a\n"


def test_an_impossible_slo_rejects_the_gate_with_exit_1_naming_it(staging, demo_hub, mlflow_server, tmp_path):
    """A gate (the CLI, on the module's server as an external endpoint: no boot of its own) whose load SLO no
    server can meet: its concurrency level and its rate level each fail naming the SLO, and the gate exits 1."""
    import json

    tight = {"peak_concurrency": 1, "levels": [1], "rates": [2], "slo": {"p95_e2el_ms": 1},
             "prompts": {"input_len": 16, "output_len": 4, "requests_per_level": 4, "seed": 1}}
    config = write_demo_release(tmp_path / "team", demo_hub, model={"name": DEMO_MODEL, "served_name_prefix": "chat"},
                                gates={"load": tight},
                                serving={"mode": "external", "external_url": staging.base_url + "/v1",
                                         "api_key_env": KEY_ENV})
    proc = cli.run_gate(config, mlflow_server, tmp_path / "home", env={KEY_ENV: staging.api_key}, timeout=600)
    assert proc.returncode == 1, proc.stdout + proc.stderr[-3000:]
    assert re.search(r"^\s+load\s+failed\s", proc.stdout, re.M)
    assert re.search(r"load 1x: p95_e2el_ms \d+ > SLO 1", proc.stdout)
    assert re.search(r"load 2rps: p95_e2el_ms \d+ > SLO 1", proc.stdout)
    report = json.loads(open(re.search(r"^report: (.+)$", proc.stdout, re.M).group(1)).read())
    load = next(s for s in report["stages"] if s["name"] == "load")
    (row,) = load["details"]["rate_levels"]
    assert row["completed"] == 4 and row["good_requests"] == 0 and row["goodput"] == 0
    assert row["vllm_request_goodput"] == 0


AA_REPEATS = 3  # 2 runs compared with the first, 2 levels each: each load run costs ~20-50 s of CI
# regression_pct 40: above this 2-core machine's run-to-run drift. In CI (2026-12-07) the third of three runs of the
# same model was ~20% slower as a whole (1x: 16.2 vs 20.4 output tok/s, p95 e2e +27%), and at a 4 req/s level,
# above the server's capacity (it completed 2.3-2.8 req/s), queueing amplified that to p95 e2e +37%: a false alarm
# at regression_pct 30. The rate level is 0.5 req/s, well below capacity (concurrency 2 finishes 0.9-1.3 req/s; at
# 1 req/s a slower machine ran near saturation, p95 e2e 3.8 s against 2.5 s at concurrency 2), so it measures the
# server, not its queue. `deep` (three times the layers) regresses by +100% and more at both levels. The SLO is out
# of reach on purpose: these tests judge the comparison with production, not the SLO.
AA_RATE = 0.5
AA_LOAD = {"peak_concurrency": 2, "levels": [1], "rates": [AA_RATE], "regression_pct": 40,
           "prompts": {"input_len": 32, "output_len": 16, "requests_per_level": 16, "seed": 1},
           "slo": {"p95_e2el_ms": 600000}}
AA_RATE_LEVEL = f"{AA_RATE:g}rps"


@pytest.fixture(scope="module")
def production_load(staging_server, demo_hub, tmp_path_factory):
    """Production's gate's load stage: one AA_LOAD run on the staging server (`instruct`): (release file, stage
    result, seconds). Its details, with the per-request latencies, are what the next gate reads."""
    import time

    base = tmp_path_factory.mktemp("production-load")
    config = write_demo_release(base / "team", demo_hub, gates={"load": AA_LOAD})
    started = time.monotonic()
    first = run_load_stage(staging_server, config, base / "run0", production=None)
    return config, first, time.monotonic() - started


def test_load_a_a_the_same_model_on_the_same_server_never_regresses(staging_server, production_load, capsys):
    """A/A: the load stage runs AA_REPEATS times on one boot; the first run is "production" (its report details,
    with the per-request latencies, are what the next gate reads). The same model on the same server must never
    regress, and every comparison is the per-request one. The same requests made 1.5x slower are caught."""
    import time

    from pipeline.checks import slo

    config, first, first_s = production_load
    tmp_path = config.parent.parent
    started = time.monotonic() - first_s
    assert first.status.value == "passed", first.reasons
    (prod_row,) = first.details["levels"]
    assert len(prod_row["samples"]["e2el_ms"]) == 16 and min(prod_row["samples"]["e2el_ms"]) > 0
    false_alarms, lines = 0, []
    for i in range(1, AA_REPEATS):
        result = run_load_stage(staging_server, config, tmp_path / f"run{i}", production=first.details)
        # the concurrency level and the request-rate level (the same seeded arrivals), each per request
        recs = result.details["baseline"]["comparisons"]
        assert [r["level"] for r in recs] == ["1x", AA_RATE_LEVEL]
        for rec in recs:
            assert rec["compared"] and rec["method"] == "rank", rec
            false_alarms += rec["verdict"] == "fail"  # regressed
            lines.append(slo.comparison_line(rec, "1"))
            assert result.metrics[f"{rec['level']}.vs_production.e2el_change_lower_pct"] <= rec["e2el"]["estimate_pct"]
    with capsys.disabled():
        print(f"\nload A/A: {false_alarms} false alarm(s) in {2 * (AA_REPEATS - 1)} comparisons with the first run "
              f"({AA_REPEATS} load runs in {time.monotonic() - started:.0f} s)")
        print("\n".join(lines))
    assert false_alarms == 0, lines
    # the same requests 1.5x slower (a candidate that really is slower): caught
    slower = {**prod_row, "samples": {**prod_row["samples"],
                                      "e2el_ms": [1.5 * v for v in prod_row["samples"]["e2el_ms"]]}}
    rec, failures = slo.compare_level(slower, prod_row, 20)
    assert rec["verdict"] == "fail" and rec["e2el"]["lower_pct"] > 20, rec
    assert failures and failures[0].startswith("load 1x: e2e latency is +50% vs production")


@pytest.fixture(scope="module")
def deep_server(demo_hub, tmp_path_factory):
    """`deep` served with production's very configuration (STAGING_SERVING) beside the staging server, booted once
    for the slower-candidate load test and the watch test (which stops it when it is done: no idle server beside
    staging for the rest of the module): (VllmServer, seconds to fetch and boot)."""
    import time

    v = demo_hub["variants"]["deep"]
    pin = Pin("git", demo_hub["repo_path"], v["revision"], v["files"])
    home = tmp_path_factory.mktemp("deep")
    started = time.monotonic()
    model_dir = fetch(pin, demo_hub["repo_path"], home, file="staging", progress=lambda m: None)
    server = VllmServer(model_dir.path, f"chat@{pin.short}", STAGING_SERVING, home / "server.log",
                        progress=lambda m: None)
    with server:
        yield server, time.monotonic() - started


def test_load_a_really_slower_candidate_on_the_same_configuration_is_rejected(staging, production_load, deep_server,
                                                                             tmp_path, capsys):
    """A candidate that really is slower: `deep` (each decoder layer followed by two copies with zero output
    projections: the same answers, three times the layers per token), served with production's very configuration
    (STAGING_SERVING), so the fingerprints match and the comparison is made. Its load stage fails (the
    candidate's failure: exit 1) naming the level, the estimate and the bound against regression_pct, and the
    report line shows the interval next to the threshold, against production v1's run."""
    import time

    import httpx

    from pipeline.checks import slo
    from pipeline.gate.verdict import decide

    def greedy(endpoint):
        body = {"model": endpoint.served_name, "temperature": 0, "max_tokens": 12,
                "messages": [{"role": "user", "content": "Name three colours."}]}
        answer = httpx.post(f"{endpoint.base_url}/v1/chat/completions", json=body, headers=endpoint.headers(),
                            timeout=60)
        answer.raise_for_status()
        return answer.json()["choices"][0]["message"]["content"]

    config, first, _ = production_load
    server, boot_s = deep_server
    booted = time.monotonic()
    result = run_load_stage(server, config, tmp_path / "candidate", production=first.details)
    loaded = time.monotonic()
    # it serves and answers (its answers match production's in exact arithmetic; float kernels over a different
    # layer count promise no exact text, so the text is shown, not compared)
    answers = greedy(server.endpoint), greedy(staging)
    assert all(a.strip() for a in answers), answers
    comparison = result.details["baseline"]
    assert comparison["status"] == "compared", comparison  # same hardware, same serving configuration
    assert result.details["fingerprint"]["serving"] == first.details["fingerprint"]["serving"]
    rec, rate_rec = comparison["comparisons"]
    for r in (rec, rate_rec):  # at concurrency 2 and at production's arrivals
        assert r["compared"] and r["method"] == "rank" and r["verdict"] == "fail", r
        assert r["e2el"]["lower_pct"] > AA_LOAD["regression_pct"], r
    assert any(f.startswith(f"load {AA_RATE_LEVEL}: e2e latency is +") for f in result.reasons)
    assert result.status.value == "failed"
    threshold = AA_LOAD["regression_pct"]
    first_reason = result.reasons[0]
    assert first_reason.startswith("load 1x: e2e latency is +") and f"> regression_pct {threshold}" in first_reason
    line = slo.comparison_lines(result.details["levels"], comparison)[0]
    assert line.startswith("1x vs production v1 (run aa-productio): e2e latency +") and \
        f"(regresses above +{threshold}%)" in line and line.endswith(": regressed")
    assert line in result.reasons  # the stage's notes carry the same line
    verdict, code, reasons = decide([result])
    assert (verdict.value, code) == ("rejected", 1) and reasons[0].startswith("load: load 1x: e2e latency is +")
    with capsys.disabled():
        rate_line = slo.comparison_lines(result.details["rate_levels"], comparison)[0]
        print(f"\nload, slower candidate (deep, same serving configuration): {line}\n  {rate_line}\n"
              f"  fetch and boot {boot_s:.0f} s, load run {loaded - booted:.0f} s\n"
              f"  deep answered {answers[0]!r}, production {answers[1]!r}")


WATCH_W = 20  # seconds per judged window: ~20 arrivals at 1 req/s
WATCH_MODEL = "smollm2-watch-e2e"


class Traffic:
    """Production's clients: chat requests at a fixed rate to one endpoint, each in its own thread (not waiting for
    the previous answer), until `switch` sends them elsewhere or `stop`. Requests still open at `stop` are left to
    finish or fail on their own; `answered` and `failed` count those that ended."""

    def __init__(self, endpoint, rate: float = 1.0, prompt: str = "Where is my parcel? Order 10442.",
                 max_tokens: int = 16) -> None:
        import threading

        self.endpoint, self.rate, self.lock = endpoint, rate, threading.Lock()
        self.prompt, self.max_tokens = prompt, max_tokens
        self.sent: dict[str, int] = {}
        self.answered: dict[str, int] = {}
        self.failed: list[str] = []
        self.done = threading.Event()
        self.loop = threading.Thread(target=self._run, daemon=True)
        self.loop.start()

    def _ask(self, endpoint) -> None:
        import httpx

        body = {"model": endpoint.served_name, "temperature": 0, "max_tokens": self.max_tokens,
                "messages": [{"role": "user", "content": self.prompt}]}
        try:
            httpx.post(f"{endpoint.base_url}/v1/chat/completions", json=body, headers=endpoint.headers(),
                       timeout=300).raise_for_status()
            with self.lock:
                self.answered[endpoint.served_name] = self.answered.get(endpoint.served_name, 0) + 1
        except Exception as exc:  # noqa: BLE001 - counted and shown by the test
            if not self.done.is_set():
                with self.lock:
                    self.failed.append(f"{endpoint.served_name}: {type(exc).__name__}: {exc}")

    def _run(self) -> None:
        import threading
        import time

        next_at = time.monotonic()
        while not self.done.is_set():
            with self.lock:
                endpoint = self.endpoint
                self.sent[endpoint.served_name] = self.sent.get(endpoint.served_name, 0) + 1
            threading.Thread(target=self._ask, args=(endpoint,), daemon=True).start()
            next_at += 1 / self.rate
            self.done.wait(max(0.0, next_at - time.monotonic()))

    def switch(self, endpoint) -> None:
        with self.lock:
            self.endpoint = endpoint

    def stop(self) -> None:
        self.done.set()
        self.loop.join()


def watch_team(team, demo_hub, mlflow_server, model: str, candidate: str, managers: list[str]):
    """A team's real release for the watch tests: `instruct` gated (signed, a stand-in stage), approved and promoted
    (v1), then `candidate` gated and approved (v2, not promoted yet); auto_rollback after 2 degraded windows, the
    latency SLOs out of reach (what decides is the previous version's window and the shares). (config, v1, v2)."""
    from pipeline.config.release import load_release
    from pipeline.core.result import StageResult, Status
    from pipeline.gate.run import run_gate
    from tests.support.git import AUTHOR, commit_all
    from tests.support.signing import KEY, trusted_signing
    from tests.support.team import approve, promote

    sections = {"promotion": {"release_managers": managers, "approvals_required": 1,
                              "auto_rollback": {"enabled": True, "consecutive_windows": 2}},
                "signing": trusted_signing(),
                "gates": {"load": {"slo": {"p95_e2el_ms": 600000, "p95_ttft_ms": 600000}, "regression_pct": 50}},
                "watch": {"window_s": WATCH_W, "min_requests": 10, "alert_for_s": 0}}
    versions = {}
    for variant in ("instruct", candidate):
        config = write_demo_release(team, demo_hub, variant, model=model, **sections)
        commit_all(team, f"pin {variant}")
        report = run_gate(load_release(config), home=team / ".modelgate", tracking_uri=mlflow_server, author=AUTHOR,
                          stages=(("format", lambda ctx: StageResult("format", Status.PASSED)),), signer=KEY.signer())
        versions[variant] = report.tracking.model_version
        assert approve(config, mlflow_server, versions[variant]).returncode == 0
        if variant == "instruct":
            assert promote(config, mlflow_server, versions[variant]).returncode == 0
    return config, versions["instruct"], versions[candidate]


def test_watch_rolls_back_a_slower_promoted_version_on_real_vllm_metrics(staging_server, deep_server, demo_hub,
                                                                       mlflow_server, tmp_path, capsys):
    """After promotion, on the real stack: a real Prometheus scrapes the two real vLLM servers (`instruct`, then
    `deep`: the same answers, three times the layers) while production's clients send a request a second. A team's
    real release: `instruct` v1 promoted, `deep` v2 gated and approved; the clients move to `deep` when v2 is
    promoted, as a rollout would. `deep` cannot keep up: it finishes fewer requests than arrive. Two whole windows
    later: with Prometheus stopped, `modelgate watch` is exit 3 and rolls nothing back; Prometheus started again
    (its TSDB kept), watch judges both windows degraded against v1's window before the promotion, at the same
    arrival rate (requests counted when they arrive), on the backlog deep piles up (unfinished share) and its
    latency (vLLM's own histograms), and auto_rollback rolls back to v1 as `modelgate-watch`: the alias returns,
    the sealed trail holds the rollback with the evidence as its reason, v2's promotion run the judgement."""
    import time

    from mlflow.tracking import MlflowClient

    from pipeline.config.release import load_release
    from pipeline.releasing import chain
    from tests.support.prometheus import PrometheusServer
    from tests.support.team import alias, modelgate, promote

    deep, _ = deep_server
    config, v1, v2 = watch_team(tmp_path / "team", demo_hub, mlflow_server, WATCH_MODEL, "deep",
                                ["alice", "bob", "modelgate-watch"])
    prometheus = PrometheusServer(tmp_path, *(s.endpoint.base_url.removeprefix("http://")
                                              for s in (staging_server, deep))).start()
    traffic = Traffic(staging_server.endpoint)
    try:
        time.sleep(WATCH_W + 4)  # a whole window of v1's traffic before the promotion
        promoted = promote(config, mlflow_server, v2)
        traffic.switch(deep.endpoint)
        assert promoted.returncode == 0, promoted.stderr
        promoted_at = time.monotonic()
        time.sleep(2 * WATCH_W + 4)  # two whole windows of v2's traffic
        prometheus.stop()
        unreachable = modelgate(config, mlflow_server, "watch", "--prometheus-url", prometheus.url)
        production_while_down = alias(mlflow_server, WATCH_MODEL, "production")
        prometheus.start()
        t0 = time.monotonic()
        watched = modelgate(config, mlflow_server, "watch", "--prometheus-url", prometheus.url)
        watch_s = time.monotonic() - t0
        watched_after_s = time.monotonic() - promoted_at
    finally:
        traffic.stop()
        prometheus.stop()
        deep.stop()  # its last user: no idle server beside staging for the rest of the module
    assert traffic.failed == [], traffic.failed[:3]
    down = unreachable.stdout + unreachable.stderr
    assert unreachable.returncode == 3 and "did not answer" in unreachable.stderr, down
    assert production_while_down == v2 and "rolled back" not in unreachable.stdout
    out = watched.stdout + watched.stderr
    assert watched.returncode == 1, out  # degraded
    assert f"rolled back to v{v1}" in watched.stdout, out
    assert alias(mlflow_server, WATCH_MODEL, "production") == v1
    assert "auto_rollback: 2 consecutive degraded windows: rolling back as modelgate-watch" in out
    log = chain.audit_log(load_release(config), mlflow_server)
    (ev,) = log.events(WATCH_MODEL, event="rollback")
    assert ev.verified and ev.actor == "modelgate-watch" and (ev.version, ev.from_version) == (v1, v2)
    assert ev.reason.startswith(f"modelgate watch: 2 consecutive degraded window(s) of {deep.served_name}: ")
    assert "p95_e2el_ms=" in ev.reason and "regresses above +50%" in ev.reason, ev.reason
    # both windows compared with v1's at the same arrival rate (requests counted when they arrive), and the backlog
    # deep added judged beside its latency (degraded when it fell far enough behind: how far depends on this
    # machine's speed, so it is shown, not asserted)
    judged = [line.split("watch: ", 1)[1] for line in watched.stderr.splitlines()  # "[  12.3s] watch: <line>"
              if "watch: window " in line or "watch:   unfinished_share: " in line]
    windows = [line for line in judged if line.startswith("window ")]
    assert len(windows) == 2 and all(f"DEGRADED; vs {staging_server.served_name} before the promotion" in w
                                     for w in windows), judged
    assert sum("unfinished_share:" in line for line in judged) == 2, judged
    promotion = next(e for e in log.events(WATCH_MODEL, event="promote") if e.version == v2)
    run = MlflowClient(tracking_uri=mlflow_server).get_run(promotion.run_id)
    assert run.data.metrics["watch.status_degraded"] == 1.0  # the judgement, recorded on v2's promotion
    with capsys.disabled():
        print(f"\nwatch on real vLLM: sent at 1 req/s {traffic.sent}, answered {traffic.answered}; v{v2} promoted, "
              f"Prometheus stopped {2 * WATCH_W + 4} s later: exit {unreachable.returncode}, production stayed "
              f"v{production_while_down}; started again, watch at {watched_after_s:.0f} s after the promotion took "
              f"{watch_s:.1f} s: rolled back to v{v1}\n  " + "\n  ".join(judged) + f"\n  reason: {ev.reason[:1500]}")


EOS_WATCH_MODEL = "smollm2-watch-eos-e2e"
# instruct answers "The capital of France is Paris." (8 tokens) and stops; `eos` talks on to max_tokens (measured:
# "Say hello." or "Thanks!" run to 24 tokens even on instruct, so they could not tell the two apart)
SHORT_ANSWER = "What is the capital of France?"


def test_watch_rolls_back_a_version_whose_answers_run_to_max_tokens_on_its_length_share(staging_server, demo_hub,
                                                                                         mlflow_server, tmp_path,
                                                                                         capsys):
    """The second real-stack case: `eos` (the end-of-turn token is no longer the eos: it talks on past the end of
    its answer to max_tokens) promoted after `instruct`, served with production's configuration; production's
    clients ask a question with a short answer (max_tokens 24). Both windows after the promotion are degraded on
    the share of requests that finished by length (vLLM's `finished_reason="length"`), against v1's window before
    the promotion, and auto_rollback rolls back to v1 as `modelgate-watch` with that evidence."""
    import time

    from pipeline.config.release import load_release
    from pipeline.releasing import chain
    from tests.support.prometheus import PrometheusServer
    from tests.support.team import alias, modelgate, promote

    config, v1, v2 = watch_team(tmp_path / "team", demo_hub, mlflow_server, EOS_WATCH_MODEL, "eos",
                                ["alice", "modelgate-watch"])
    v = demo_hub["variants"]["eos"]
    pin = Pin("git", demo_hub["repo_path"], v["revision"], v["files"])
    home = tmp_path / "eos"
    booted = time.monotonic()
    model_dir = fetch(pin, demo_hub["repo_path"], home, file="staging", progress=lambda m: None)
    with VllmServer(model_dir.path, f"chat@{pin.short}", STAGING_SERVING, home / "server.log",
                    progress=lambda m: None) as eos:  # its Endpoint
        boot_s = time.monotonic() - booted
        prometheus = PrometheusServer(tmp_path, *(e.base_url.removeprefix("http://")
                                                  for e in (staging_server.endpoint, eos))).start()
        traffic = Traffic(staging_server.endpoint, prompt=SHORT_ANSWER, max_tokens=24)
        try:
            time.sleep(WATCH_W + 4)  # a whole window of v1's traffic before the promotion
            promoted = promote(config, mlflow_server, v2)
            traffic.switch(eos)
            assert promoted.returncode == 0, promoted.stderr
            time.sleep(2 * WATCH_W + 4)  # two whole windows of v2's traffic
            t0 = time.monotonic()
            watched = modelgate(config, mlflow_server, "watch", "--prometheus-url", prometheus.url)
            watch_s = time.monotonic() - t0
        finally:
            traffic.stop()
            prometheus.stop()
    assert traffic.failed == [], traffic.failed[:3]
    out = watched.stdout + watched.stderr
    assert watched.returncode == 1, out  # degraded
    assert f"rolled back to v{v1}" in watched.stdout and alias(mlflow_server, EOS_WATCH_MODEL, "production") == v1, out
    judged = [line.split("watch: ", 1)[1] for line in watched.stderr.splitlines() if "watch: " in line]
    windows = [line for line in judged if line.startswith("window ")]
    lengths = [line.strip() for line in judged if line.strip().startswith("length_share: ")]
    assert len(windows) == 2 and all(f"DEGRADED; vs {staging_server.served_name} before the promotion" in w
                                     for w in windows), judged
    # every answer of eos ran to max_tokens; v1's stopped on their own: the length share is what is degraded
    assert len(lengths) == 2 and all(float(line.split(": ")[1]) >= 0.9 and ": degraded (" in line
                                     for line in lengths), lengths
    (ev,) = chain.audit_log(load_release(config), mlflow_server).events(EOS_WATCH_MODEL, event="rollback")
    assert ev.verified and ev.actor == "modelgate-watch" and (ev.version, ev.from_version) == (v1, v2)
    assert "length_share=" in ev.reason, ev.reason
    with capsys.disabled():
        print(f"\nwatch on real vLLM, eos: fetch and boot {boot_s:.0f} s; sent at 1 req/s {traffic.sent}, answered "
              f"{traffic.answered}; watch took {watch_s:.1f} s: rolled back to v{v1}\n  " + "\n  ".join(judged)
              + f"\n  reason: {ev.reason[:1200]}")


def test_prefix_cached_multiple_choice_scoring_decides_every_item_as_lm_evals_echo_path(staging_server, tmp_path,
                                                                                        monkeypatch):
    """The multiple-choice task through the evals' lm-eval run on this server (its chat template, as the demo gate
    runs it) with `loglikelihood: prefix_cached`; then every choice it logged (lm-eval's own (context,
    continuation) strings) scored again in this process by lm-eval's `local-completions` loglikelihood path (echo,
    prompt logprobs) on the same server. Same acc and acc_norm on every item; every choice's loglikelihood within
    bf16 rounding of the logits of the other's; the prefix cache served most of the new path's prompt tokens."""
    import json
    from types import SimpleNamespace

    import httpx
    from lm_eval.models.openai_completions import LocalCompletionsAPI

    from pipeline.serving.prometheus import parse
    from pipeline.tools.lmeval import ChatMode, run_lmeval
    from tests.support.paths import REPO

    endpoint = staging_server.endpoint

    def cache() -> tuple[float, float]:
        m = parse(httpx.get(f"{endpoint.base_url}/metrics", headers=endpoint.headers(), timeout=10).text)
        return m["vllm:prefix_cache_queries_total"], m["vllm:prefix_cache_hits_total"]

    before = cache()
    run = run_lmeval(endpoint.base_url, endpoint.served_name, staging_server.model_dir, ["support_intent"],
                     REPO / "evalsets", tmp_path, num_concurrent=4, limit=5, progress=lambda m: None,
                     api_key=endpoint.api_key, modes={"support_intent": ChatMode(True, True)})
    queries, hits = (after - b for after, b in zip(cache(), before, strict=True))
    assert "modelgate-completions" in run.command and queries > 0 and hits / queries > 0.5, (hits, queries)
    lines = open(run.samples_files["support_intent"], encoding="utf-8").read().splitlines()
    samples = sorted(map(json.loads, lines), key=lambda s: s["doc_id"])
    assert len(samples) == 5 == len(run.items)

    monkeypatch.setenv("OPENAI_API_KEY", endpoint.api_key or "")  # what lm-eval's API models send
    echo = LocalCompletionsAPI(base_url=f"{endpoint.base_url}/v1/completions", model=endpoint.served_name,
                               tokenizer=str(staging_server.model_dir), tokenizer_backend="huggingface",
                               tokenized_requests=True, num_concurrent=4, max_retries=3)
    args = [(a["arg_0"], a["arg_1"]) for s in samples for a in s["arguments"].values()]
    lls = [ll for ll, _ in echo.loglikelihood([SimpleNamespace(args=a) for a in args], disable_tqdm=True)]
    gaps = []
    for s in samples:
        choices = [a["arg_1"] for a in s["arguments"].values()]
        old, lls = lls[:len(choices)], lls[len(choices):]
        new = [float(r[0]) for r in s["filtered_resps"]]
        gaps += [abs(x - y) for x, y in zip(new, old, strict=True)]
        # lm-eval's multiple_choice metrics: argmax of the loglikelihoods, of loglikelihood per character
        acc = float(max(range(len(old)), key=lambda i: old[i]) == int(s["target"]))
        acc_norm = float(max(range(len(old)), key=lambda i: old[i] / len(choices[i])) == int(s["target"]))
        item = next(it for it in run.items if it["doc_id"] == s["doc_id"])
        assert (item["acc"], item["acc_norm"]) == (acc, acc_norm), (s["doc_id"], new, old)
    # bf16 logits from other kernels/batch shapes (prefix-cached KV, one position) round differently: < 0.5 apart
    assert len(gaps) == 30 and max(gaps) < 0.5, gaps
