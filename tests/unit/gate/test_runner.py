"""The runner loop, the verdict and the exit codes, with plain-function stages (no servers)."""

import pytest

from pipeline import errors
from pipeline.core.result import StageResult, Status
from pipeline.gate.context import GateContext
from pipeline.gate.runner import run_stages
from pipeline.gate.verdict import decide


def stage(status=None, raises=None, calls=None):
    def run(ctx):
        if calls is not None:
            calls.append(ctx)
        if raises is not None:
            raise raises
        return StageResult("x", status, metrics={"m": 1.0})

    return run


@pytest.fixture
def ctx(tmp_path):
    return GateContext(release=None, run_dir=tmp_path, home=tmp_path)


def test_all_passed_is_exit_0(ctx):
    results = run_stages(ctx, [("a", stage(Status.PASSED)), ("b", stage(Status.PASSED))])
    assert [r.status for r in results] == [Status.PASSED, Status.PASSED]
    assert all(r.duration_s >= 0 for r in results)
    assert decide(results)[:2] == ("passed", errors.EXIT_PASSED)


def test_failed_stage_rejects_with_exit_1_and_skips_the_rest(ctx):
    later = []
    results = run_stages(ctx, [("a", stage(Status.FAILED)), ("b", stage(Status.PASSED, calls=later))])
    assert later == []
    assert results[1].status == Status.SKIPPED and "stage a failed" in results[1].reasons[0]
    verdict, code, reasons = decide(results)
    assert (verdict, code) == ("rejected", errors.EXIT_REJECTED)


def test_infra_error_is_exit_3_with_message_and_log_tail(ctx, tmp_path):
    err = errors.ServerError("vLLM exited with code 1 during start-up", log_tail="Traceback\nboom",
                             log_file=str(tmp_path / "server.log"))
    results = run_stages(ctx, [("serve", stage(raises=err)), ("format", stage(Status.PASSED))])
    assert results[0].status == Status.ERROR
    assert results[0].details["log_tail"].endswith("boom")
    assert results[0].artifacts["server.log"].endswith("server.log")
    verdict, code, reasons = decide(results)
    assert (verdict, code) == ("error", errors.EXIT_INFRA)
    assert reasons == ["serve: vLLM exited with code 1 during start-up"]


def test_inconclusive_is_exit_4(ctx):
    results = run_stages(ctx, [("a", stage(Status.PASSED)), ("b", stage(Status.INCONCLUSIVE))])
    assert decide(results)[:2] == ("inconclusive", errors.EXIT_INCONCLUSIVE)


@pytest.mark.parametrize("exc, name", [(KeyboardInterrupt(), "SIGINT"), (errors.Interrupted("SIGTERM"), "SIGTERM")])
def test_interrupt_is_exit_130_and_never_passed(ctx, exc, name):
    results = run_stages(ctx, [("a", stage(Status.PASSED)), ("b", stage(raises=exc)), ("c", stage(Status.PASSED))])
    assert [r.status for r in results] == [Status.PASSED, Status.INTERRUPTED, Status.SKIPPED]
    assert results[1].reasons == [f"interrupted by {name}"]
    assert decide(results)[:2] == ("interrupted", errors.EXIT_INTERRUPTED)


def test_bad_input_propagates_and_cleanup_runs(ctx):
    torn_down = []
    ctx.cleanup.callback(lambda: torn_down.append(True))
    with pytest.raises(errors.DigestMismatch):
        run_stages(ctx, [("fetch", stage(raises=errors.DigestMismatch("bad", file="r.yaml")))])
    assert torn_down == [True]


def test_only_skips_is_not_a_pass():
    assert decide([StageResult("a", Status.SKIPPED)])[:2] == ("error", errors.EXIT_INFRA)


def test_precedence_interrupted_over_error_over_rejected():
    mixed = [StageResult("a", Status.FAILED), StageResult("b", Status.ERROR), StageResult("c", Status.INCONCLUSIVE)]
    assert decide(mixed)[0] == "error"
    assert decide(mixed + [StageResult("d", Status.INTERRUPTED)])[0] == "interrupted"


def test_quality_stages_still_run_after_a_rejection_but_not_after_an_error(ctx):
    ran = []
    stages = [("format", stage(Status.FAILED)), ("evals", stage(Status.PASSED, calls=ran)),
              ("load", stage(Status.PASSED, calls=ran))]
    results = run_stages(ctx, stages, after_failure=("evals",))
    assert [r.status for r in results] == [Status.FAILED, Status.PASSED, Status.SKIPPED]
    assert len(ran) == 1 and decide(results)[0] == "rejected"
    ran.clear()
    results = run_stages(ctx, [("format", stage(raises=errors.InfraError("down")))] + stages[1:],
                         after_failure=("evals",))
    assert [r.status for r in results] == [Status.ERROR, Status.SKIPPED, Status.SKIPPED] and ran == []


def test_a_failed_prerequisite_skips_every_later_stage_and_rejects(ctx):
    from pipeline.gate.run import AFTER_FAILURE, PREREQUISITES

    ran = []
    stages = [("fetch", stage(Status.PASSED)), ("serve", stage(Status.FAILED)),
              ("format", stage(Status.PASSED, calls=ran)), ("evals", stage(Status.PASSED, calls=ran)),
              ("compare", stage(Status.PASSED, calls=ran)), ("load", stage(Status.PASSED, calls=ran))]
    results = run_stages(ctx, stages, after_failure=AFTER_FAILURE, prerequisites=PREREQUISITES)
    assert ran == []
    assert [r.status for r in results[2:]] == [Status.SKIPPED] * 4
    assert all(r.reasons == ["not run: stage serve failed"] for r in results[2:])
    assert decide(results)[:2] == ("rejected", errors.EXIT_REJECTED)


def test_every_verdict_has_a_commit_status_state_and_nothing_else_does():
    from pipeline.core.verdict import VERDICTS, Verdict
    from pipeline.integrations.github import STATE_FOR_VERDICT, STATUS_STATES

    assert set(STATE_FOR_VERDICT) == set(Verdict) == set(VERDICTS)
    assert set(STATE_FOR_VERDICT.values()) <= set(STATUS_STATES)


def test_verdicts_are_the_strings_reports_and_mlflow_tags_hold():
    from pipeline.core.verdict import Verdict

    assert [str(v) for v in Verdict] == ["passed", "rejected", "inconclusive", "error", "interrupted"]
    assert decide([StageResult("a", Status.FAILED)])[0] == "rejected"


def test_an_advisory_gate_passes_what_a_release_gate_calls_inconclusive_and_says_what_it_could_miss(ctx):
    from pipeline.gate.verdict import ADVISORY_PASS

    def inconclusive(c):
        return StageResult("compare", Status.INCONCLUSIVE,
                           reasons=["format/pass: -0.02 [-0.21, +0.16]: inconclusive (MDE 80% 0.31)"])

    results = run_stages(ctx, [("a", stage(Status.PASSED)), ("compare", inconclusive)])
    assert decide(results)[:2] == ("inconclusive", errors.EXIT_INCONCLUSIVE)
    verdict, code, reasons = decide(results, advisory=True)
    assert (verdict, code) == ("passed", errors.EXIT_PASSED)
    assert reasons == [ADVISORY_PASS, "compare: format/pass: -0.02 [-0.21, +0.16]: inconclusive (MDE 80% 0.31)"]
    # clearly worse, broken or stopped decides as in a release gate
    for status, expected in ((Status.FAILED, "rejected"), (Status.ERROR, "error"), (Status.INTERRUPTED, "interrupted")):
        mixed = results + run_stages(ctx, [("z", stage(status))])
        assert decide(mixed, advisory=True)[0] == expected
