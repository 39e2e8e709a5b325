"""A server that does not start: whose fault it is, read from vLLM's log (serving/startup.py), and what the serve
stage makes of it (a rejection with evidence, an infrastructure error, or a differential check).

corrupt_weights.log and kv_cache_too_small.log are real logs of vLLM 0.32 (CPU) failing on the demo hub's `corrupt`
and `mha` variants, max_model_len_above_the_model.log of the demo model served with a longer context than it has;
the others follow the shapes vLLM, PyTorch and transformers print for those failures."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from pipeline.config.release import Pin
from pipeline.core.result import Status
from pipeline.errors import StartupError
from pipeline.gate.context import GateContext
from pipeline.gate.stages import serve
from pipeline.integrations.registry import Baseline
from pipeline.serving import startup
from tests.support.paths import REPO

LOGS = REPO / "tests" / "fixtures" / "vllm_logs"


def log(name: str) -> str:
    return (LOGS / name).read_text(encoding="utf-8")


def test_the_real_corrupt_weights_log_is_the_candidates_fault_with_the_root_exception_line():
    found = startup.diagnose(log("corrupt_weights.log"), returncode=1)
    assert found.cause == startup.CANDIDATE
    assert found.first_error == ("safetensors._safetensors_rust.SafetensorError: Error while deserializing header: "
                                 "incomplete metadata, file not fully covered")
    assert found.why.endswith("(in vllm/model_executor/model_loader/weight_utils.py)")


def test_a_validation_error_summary_is_shown_by_the_error_under_it_with_the_knob_that_sets_it():
    """max_model_len_above_the_model.log is a real vLLM 0.32 log: `--max-model-len 100000` on the demo model
    (max_position_embeddings 8192). The exception line only counts the errors; the line under it says what is
    wrong, and release.yaml's serving.max_model_len sets the value. The traceback runs through vLLM's argument
    handling, not the model's files: whose fault it is, the differential check decides."""
    found = startup.diagnose(log("max_model_len_above_the_model.log"), returncode=1)
    assert found.first_error.startswith("User-specified max_model_len (100000) is greater than the derived "
                                        "max_model_len (max_position_embeddings=8192.0 or model_max_length=None")
    assert found.first_error.endswith(" (release.yaml: serving.max_model_len)")
    assert "validation error for" not in found.first_error and "[type=" not in found.first_error
    assert found.cause == startup.UNKNOWN


def test_any_other_exception_line_stays_the_first_error_even_with_indented_lines_under_it():
    text = ("Traceback (most recent call last):\n"
            '  File "/v/site-packages/vllm/engine/arg_utils.py", line 1, in create\n'
            "ValueError: To serve at least one request the KV cache is too small\n"
            "  (an indented note that is not an error list)\n")
    assert startup.diagnose(text, returncode=1).first_error == \
        "ValueError: To serve at least one request the KV cache is too small"


def test_the_root_traceback_is_the_first_one_with_its_prefixes_stripped():
    tbs = startup.tracebacks(log("corrupt_weights.log"))
    assert len(tbs) >= 3  # the worker's, then the engine's and the API server's pointing "above"
    assert tbs[0].frames[0].endswith("multiproc_executor.py:worker_main")
    assert tbs[-1].exception.startswith("RuntimeError: Engine core initialization failed")


@pytest.mark.parametrize(("name", "returncode", "cause", "first", "why"), [
    ("address_in_use.log", 1, startup.ENVIRONMENT, "OSError: [Errno 98] Address already in use", "address is taken"),
    ("vllm_import_error.log", 1, startup.ENVIRONMENT,
     "ImportError: libgomp.so.1: cannot open shared object file: No such file or directory", "installation is broken"),
    ("cpu_allocator_oom.log", 1, startup.UNKNOWN, "RuntimeError: [enforce fail at alloc_cpu.cpp:117]",
     "a resource ran out"),
    ("killed_no_traceback.log", -9, startup.UNKNOWN, "", "killed by signal 9 without a traceback"),
    ("bad_config_json.log", 1, startup.CANDIDATE,
     "json.decoder.JSONDecodeError: Expecting ',' delimiter: line 12 column 3 (char 301)",
     "json/decoder.py"),
    ("engine_internal.log", 1, startup.UNKNOWN, "ValueError: No available memory for the cache blocks",
     "does not run through model loading"),
    # real (vLLM 0.32, CPU): the demo hub's `mha` on a 48 MiB KV cache; the engine core sizing its KV cache
    # (core.py _initialize_kv_caches -> kv_cache_utils.py), no model file in the traceback
    ("kv_cache_too_small.log", 1, startup.UNKNOWN,
     "ValueError: To serve at least one request with the model's max seq len (1024), (0.07 GiB KV cache is needed",
     "does not run through model loading"),
])
def test_classification_by_general_rules(name, returncode, cause, first, why):
    found = startup.diagnose(log(name), returncode=returncode)
    assert found.cause == cause, found
    assert found.first_error.startswith(first) and why in found.why, found


def test_a_timeout_is_the_environments_unless_the_log_shows_the_model_failing_to_load():
    found = startup.diagnose(log("killed_no_traceback.log"), returncode=None, timed_out=True)
    assert found.cause == startup.ENVIRONMENT and "timed out" in found.why
    found = startup.diagnose(log("corrupt_weights.log"), returncode=None, timed_out=True)
    assert found.cause == startup.CANDIDATE


def test_an_import_failing_inside_model_loading_is_left_to_the_differential_check():
    text = ("Traceback (most recent call last):\n"
            '  File "/v/site-packages/vllm/model_executor/models/registry.py", line 1, in _try_load\n'
            "    import flash_linear_attention\n"
            "ModuleNotFoundError: No module named 'flash_linear_attention'\n")
    found = startup.diagnose(text, returncode=1)
    assert found.cause == startup.UNKNOWN and "while loading the model" in found.why


# --- the serve stage's decision -------------------------------------------------------------------------

CANDIDATE_REV, PRODUCTION_REV = "c" * 40, "p" * 40


class Store:
    def __init__(self, baseline: Baseline | None):
        self.baseline = baseline
        self.asked: list[str] = []

    def production(self, model_name: str) -> Baseline | None:
        self.asked.append(model_name)
        return self.baseline


def context(tmp_path: Path, production: str | None) -> GateContext:
    baseline = None if production is None else Baseline(
        version="3", run_id="r" * 32, pin=Pin(source="git", repo="/hub", revision=production), digests={}, items={})
    release = SimpleNamespace(model_name="smollm2", candidate=Pin(source="git", repo="/hub", revision=CANDIDATE_REV))
    return GateContext(release=release, run_dir=tmp_path, home=tmp_path, baseline_store=Store(baseline))


def failure(tmp_path: Path, name: str, returncode: int | None = 1) -> StartupError:
    path = tmp_path / "server.log"
    path.write_text(log(name), encoding="utf-8")
    return StartupError(f"vLLM exited with code {returncode} during start-up", log_tail="tail", log_file=str(path),
                        returncode=returncode)


def no_boot(*args: object) -> tuple[bool, str, str]:
    raise AssertionError("the log decided: no differential boot")


def test_a_candidate_that_does_not_load_is_rejected_with_the_log_as_evidence(tmp_path):
    ctx = context(tmp_path, PRODUCTION_REV)
    result = serve.does_not_start(ctx, failure(tmp_path, "corrupt_weights.log"), lambda _: None, boot=no_boot)
    assert result.status == Status.FAILED
    assert result.reasons[0] == ("does not load: safetensors._safetensors_rust.SafetensorError: Error while "
                                 "deserializing header: incomplete metadata, file not fully covered")
    assert result.reasons[1].startswith("decided by the server log:")
    assert result.artifacts == {"server.log": str(tmp_path / "server.log")}
    # the log's tail holds only the tracebacks pointing "above": the root traceback's lines come first
    head, end = result.details["log_tail"].split("\n[...]\n")
    assert head.splitlines()[-1].endswith("SafetensorError: Error while deserializing header: incomplete metadata, "
                                          "file not fully covered")
    assert "safetensors_weights_iterator" in head and end == "tail"
    assert result.details["load_failure"]["cause"] == "candidate"


def test_an_environment_failure_is_an_error_with_the_log(tmp_path):
    result = serve.does_not_start(context(tmp_path, PRODUCTION_REV), failure(tmp_path, "address_in_use.log"),
                                  lambda _: None, boot=no_boot)
    assert result.status == Status.ERROR
    assert "the environment's fault (the server's address is taken)" in result.reasons[0]
    assert result.artifacts["server.log"].endswith("server.log")


def test_unexplained_failure_production_boots_so_the_candidate_is_rejected(tmp_path):
    ctx = context(tmp_path, PRODUCTION_REV)
    booted: list[str] = []

    def boot(ctx, pin, log_file, progress):
        booted.append(pin.revision)
        log_file.parent.mkdir(parents=True, exist_ok=True)
        log_file.write_text("production log")
        return True, "it became healthy", "production log"

    result = serve.does_not_start(ctx, failure(tmp_path, "killed_no_traceback.log", -9), lambda _: None, boot=boot)
    assert booted == [PRODUCTION_REV] and ctx.baseline_store.asked == ["smollm2"]
    assert result.status == Status.FAILED
    assert result.reasons[0].startswith("does not load: ")
    assert "decided by a differential check: production v3 (pppppppppppp) started on this machine" in result.reasons[1]
    assert result.details["load_failure"]["production_booted"] is True
    assert set(result.artifacts) == {"server.log", "production-server.log"}
    assert result.details["production_log_tail"] == "production log"  # both boots' evidence in the report


def test_unexplained_failure_production_fails_too_is_infrastructure_stating_both(tmp_path):
    result = serve.does_not_start(context(tmp_path, PRODUCTION_REV), failure(tmp_path, "engine_internal.log"),
                                  lambda _: None, boot=lambda *a: (False, "vLLM exited with code 1 during start-up",
                                                                 "production's tail"))
    assert result.status == Status.ERROR
    reason = result.reasons[0]
    assert reason.startswith("vLLM exited with code 1 during start-up (ValueError: No available memory")
    assert "production v3 (pppppppppppp) failed to start too" in reason and "infrastructure failure" in reason
    assert result.details["production_log_tail"] == "production's tail"


@pytest.mark.parametrize(("production", "why"), [(None, "there is no production version"),
                                                 (CANDIDATE_REV, "the candidate is the production pin")])
def test_unexplained_failure_without_a_production_to_compare_is_infrastructure(tmp_path, production, why):
    result = serve.does_not_start(context(tmp_path, production), failure(tmp_path, "cpu_allocator_oom.log"),
                                  lambda _: None, boot=no_boot)
    assert result.status == Status.ERROR and why in result.reasons[0]
    assert "the log does not tell whose fault it is (a resource ran out" in result.reasons[0]


def test_a_timeout_without_an_error_line_names_the_timeout_once(tmp_path):
    path = tmp_path / "server.log"
    path.write_text("$ python -m vllm.entrypoints.openai.api_server --model /m\n"
                    "(APIServer pid=1) INFO 11-30 23:30:07 [api_utils.py:286] non-default args: {}\n")
    exc = StartupError("vLLM did not become healthy within 3s (serving.startup_timeout_s)", log_tail="tail",
                       log_file=str(path), timed_out=True)
    result = serve.does_not_start(context(tmp_path, PRODUCTION_REV), exc, lambda _: None, boot=no_boot)
    assert result.status == Status.ERROR
    assert result.reasons == ["vLLM did not become healthy within 3s (serving.startup_timeout_s): the environment's "
                              "fault (the start-up timed out without a model-loading error in the log)"]
