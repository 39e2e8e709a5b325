"""`serving.mode: external`: the gate uses an already running OpenAI-compatible endpoint (a staging
deployment) instead of spawning vLLM. Here that endpoint is a real vLLM server started once for the module.
The load stage's A/A test runs on the same boot (one server for the module: no boot of its own)."""

from __future__ import annotations

import pytest

from pipeline.config.release import Pin, Serving
from pipeline.model.fetch import fetch
from pipeline.serving.vllm_server import VllmServer
from tests.support import cli
from tests.support.loadstage import run_load_stage
from tests.support.releases import DEMO_MODEL, write_demo_release

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def staging_server(demo_hub, tmp_path_factory):
    """A running vLLM server (the VllmServer) for the demo pin, served under the name the gate expects
    (chat@<rev12>)."""
    v = demo_hub["variants"]["instruct"]
    pin = Pin("git", demo_hub["repo_path"], v["revision"], v["files"])
    home = tmp_path_factory.mktemp("staging")
    model_dir = fetch(pin, demo_hub["repo_path"], home, file="staging", progress=lambda m: None)
    serving = Serving(enforce_eager=True, max_model_len=1024, startup_timeout_s=300,
                      env={"VLLM_CPU_KVCACHE_SPACE": "1"})
    server = VllmServer(model_dir.path, f"chat@{pin.short}", serving, home / "server.log", progress=lambda m: None)
    with server:
        yield server


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
        "  - id: long\n    messages:\n      - {role: user, content: 'Write a long story about a cat who travels the"
        " world. Use at least 300 words.'}\n    expect: {max_chars: 100000}\n", encoding="utf-8")
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


AA_REPEATS = 4  # 3 comparisons: each load run costs ~15-50 s of CI (the benchmark imports vLLM)
# 30: above this 2-core machine's run-to-run drift (lower bounds up to +11% between runs of the same model in CI)
AA_LOAD = {"peak_concurrency": 2, "levels": [1], "regression_pct": 30,
           "prompts": {"input_len": 32, "output_len": 16, "requests_per_level": 16, "seed": 1},
           "slo": {"p95_e2el_ms": 60000}}


def test_load_a_a_the_same_model_on_the_same_server_never_regresses(staging_server, demo_hub, tmp_path, capsys):
    """A/A: the load stage runs AA_REPEATS times on one boot; the first run is "production" (its report details,
    with the per-request latencies, are what the next gate reads). The same model on the same server must never
    regress, and every comparison is the per-request one. The same requests made 1.5x slower are caught."""
    import time

    from pipeline.checks import slo

    config = write_demo_release(tmp_path / "team", demo_hub, gates={"load": AA_LOAD})
    started = time.monotonic()
    first = run_load_stage(staging_server, config, tmp_path / "run0", production=None)
    assert first.status.value == "passed", first.reasons
    (prod_row,) = first.details["levels"]
    assert len(prod_row["samples"]["e2el_ms"]) == 16 and min(prod_row["samples"]["e2el_ms"]) > 0
    false_alarms, lines = 0, []
    for i in range(1, AA_REPEATS):
        result = run_load_stage(staging_server, config, tmp_path / f"run{i}", production=first.details)
        (rec,) = result.details["baseline"]["comparisons"]
        assert rec["compared"] and rec["method"] == "rank", rec
        false_alarms += rec["verdict"] == "regressed"
        lines.append(slo.comparison_line(rec, "1"))
        assert result.metrics["1x.vs_production.e2el_change_lower_pct"] <= rec["e2el"]["estimate_pct"]
    with capsys.disabled():
        print(f"\nload A/A: {false_alarms} false alarm(s) in {AA_REPEATS - 1} comparisons with the first run "
              f"({AA_REPEATS} load runs in {time.monotonic() - started:.0f} s)")
        print("\n".join(lines))
    assert false_alarms == 0, lines
    # the same requests 1.5x slower (a candidate that really is slower): caught
    slower = {**prod_row, "samples": {**prod_row["samples"],
                                      "e2el_ms": [1.5 * v for v in prod_row["samples"]["e2el_ms"]]}}
    rec, failures = slo.compare_level(slower, prod_row, 20)
    assert rec["verdict"] == "regressed" and rec["e2el"]["lower_pct"] > 20, rec
    assert failures and failures[0].startswith("load 1x: e2e latency is +50% vs production")


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
