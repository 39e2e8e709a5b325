"""The staging server's per-gate API key: in the environment of the server and of each client process,
never on a command line; registered as a secret so `redact` removes it; secrets of ours stay out of children."""

from __future__ import annotations

import pytest

from pipeline.config.release import Serving
from pipeline.serving.vllm_server import Endpoint, VllmServer, build_command, server_env
from pipeline.tools import lmeval, servebench
from pipeline.util import secrets


@pytest.fixture
def fake_env(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_unit_secret_value")
    monkeypatch.setenv("GITHUB_TOKEN", "ghp_unit_secret_value")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-users-own-openai-key")
    monkeypatch.setenv("TEAM_DB_PASSWORD", "team-db-password-1")
    secrets.register_secret_env(["TEAM_DB_PASSWORD"])


def test_server_command_carries_no_key_and_env_does(tmp_path, fake_env):
    server = VllmServer(tmp_path, "chat@abc", Serving(), tmp_path / "server.log", progress=lambda m: None)
    key = server.api_key
    assert len(key) >= 32
    cmd = build_command(tmp_path, "chat@abc", 8000, Serving(extra_args=("--seed", "1")))
    assert key not in " ".join(cmd) and "--api-key" not in cmd
    env = server_env(Serving(env={"VLLM_API_KEY": "overridden?"}), key)
    assert env["VLLM_API_KEY"] == key  # the serving env cannot replace the per-gate key
    for name in ("HF_TOKEN", "GITHUB_TOKEN", "OPENAI_API_KEY", "TEAM_DB_PASSWORD"):
        assert name not in env
    assert secrets.redact(f"Authorization: Bearer {key}") == "Authorization: Bearer ***"


def test_each_server_gets_a_different_key_unless_given(tmp_path):
    a = VllmServer(tmp_path, "m", Serving(), tmp_path / "a.log")
    b = VllmServer(tmp_path, "m", Serving(), tmp_path / "b.log")
    c = VllmServer(tmp_path, "m", Serving(), tmp_path / "c.log", api_key=a.api_key)
    assert a.api_key != b.api_key and c.api_key == a.api_key


def test_endpoint_repr_hides_the_key():
    ep = Endpoint("http://127.0.0.1:1", "m", None, None, api_key="k" * 40)
    assert "k" * 40 not in repr(ep) and ep.headers() == {"Authorization": "Bearer " + "k" * 40}
    assert Endpoint("http://127.0.0.1:1", "m", None, None).headers() == {}


def test_lmeval_gets_the_key_as_openai_api_key_not_in_argv(tmp_path, fake_env):
    cmd = lmeval.build_command("http://127.0.0.1:9/v1", "m", tmp_path, ["t"], tmp_path, tmp_path / "raw")
    env = lmeval.lmeval_env("gate-key-123456")
    assert "gate-key-123456" not in " ".join(cmd)
    assert env["OPENAI_API_KEY"] == "gate-key-123456" and "HF_TOKEN" not in env and "GITHUB_TOKEN" not in env
    # no key (an external endpoint without one): the user's own OpenAI key is not passed on either
    assert "OPENAI_API_KEY" not in lmeval.lmeval_env(None)


def test_serving_benchmark_gets_the_key_in_its_env(tmp_path, fake_env):
    req = servebench.BenchRequest(base_url="http://127.0.0.1:9", served_name="m", tokenizer=str(tmp_path),
                                  concurrency=1, num_prompts=1, input_len=8, output_len=8, seed=0,
                                  api_key="bench-key-123456")
    assert "bench-key-123456" not in " ".join(servebench.build_command(req, tmp_path, "r.json"))
    assert "bench-key-123456" not in repr(req)
    env = servebench.bench_env(req)
    assert env["OPENAI_API_KEY"] == "bench-key-123456" and "TEAM_DB_PASSWORD" not in env


def test_redact_tree_rewrites_files_holding_a_secret(tmp_path, fake_env):
    (tmp_path / "a.log").write_text("token=ghp_unit_secret_value\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.json").write_text('{"ok": 1}')
    assert secrets.redact_tree(tmp_path) == [tmp_path / "a.log"]
    assert (tmp_path / "a.log").read_text() == "token=***\n"


def test_external_endpoint_key_comes_from_the_named_variable(monkeypatch):
    from pipeline.gate.stages.serve import external_api_key

    monkeypatch.setenv("STAGING_KEY", "external-key-42")
    assert external_api_key(Serving(mode="external", external_url="http://x", api_key_env="STAGING_KEY")) == \
        "external-key-42"
    assert external_api_key(Serving(mode="external", external_url="http://x")) is None
    assert secrets.redact("external-key-42") == "***"


@pytest.mark.parametrize(("serving", "space"), [
    (Serving(), "2"),  # the default
    (Serving(env={"VLLM_CPU_KVCACHE_SPACE": "1"}), "1"),
    # the size in bytes as a server argument: the variable (which vLLM lets override it) is not passed on
    (Serving(extra_args=("--kv-cache-memory-bytes", "50331648")), None),
    (Serving(extra_args=("--kv-cache-memory-bytes=48M",)), None),
    (Serving(extra_args=("--kv-cache-memory-bytes", "48M"), env={"VLLM_CPU_KVCACHE_SPACE": "4"}), "4"),
])
def test_kv_cache_space_default_never_overrides_a_size_in_bytes(monkeypatch, serving, space):
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "8")  # inherited from the gate's own environment
    assert server_env(serving, "k").get("VLLM_CPU_KVCACHE_SPACE") == space


def test_an_external_endpoint_is_addressed_by_its_base_url_with_or_without_v1():
    for url in ("http://10.0.0.5:8000/v1", "http://10.0.0.5:8000/v1/", "http://10.0.0.5:8000", "http://10.0.0.5:8000/"):
        endpoint = Endpoint.external(url, "chat@abc", "sk-key", 30)
        assert endpoint.base_url == "http://10.0.0.5:8000" and endpoint.pid is None and endpoint.log_file is None
        assert endpoint.headers() == {"Authorization": "Bearer sk-key"} and endpoint.request_timeout_s == 30
