"""`modelgate plan` through the CLI: items a margin needs, the spread given or read from production, exit codes."""

import re

import pytest

from pipeline.checks import power as pw
from pipeline.cli import main
from pipeline.config.release import Pin
from pipeline.gate import plan as planning
from pipeline.integrations.registry import Baseline
from tests.support.releases import VALID_RELEASE


def run_cli(argv):
    try:
        return main(argv)
    except SystemExit as exc:
        return exc.code


@pytest.fixture
def config(write_release):
    return write_release(dict(VALID_RELEASE, gates={"alpha": 0.05}))


def test_plan_with_a_given_discordance(config, capsys):
    assert run_cli(["plan", "--config", str(config), "--metric", "format/pass", "--margin", "0.1",
                    "--discordance", "0.15"]) == 0
    out = capsys.readouterr().out
    needed = pw.items_needed(pw.Spread("binary", 0.15, True), 0.1, 0.05, 0.8)
    assert out.splitlines() == ["metric: format/pass (binary)",
                                "spread: discordant-pair rate 0.15 (given by --discordance)",
                                "alpha 0.05 (release.yaml gates.alpha), power 80%",
                                f"margin 0.1 needs {needed} paired items"]
    assert pw.binary_mde(needed, 0.15) <= 0.1


def test_plan_with_a_given_sd_and_power(config, capsys):
    assert run_cli(["plan", "--config", str(config), "--metric", "support_facts/f1", "--margin", "0.05",
                    "--sd", "0.25", "--power", "0.9"]) == 0
    out = capsys.readouterr().out
    n = int(re.search(r"margin 0.05 needs (\d+) paired items", out).group(1))
    assert "metric: support_facts/f1 (continuous)" in out and "power 90%" in out
    assert n == pytest.approx(((1.6449 + 1.2816) * 0.25 / 0.05) ** 2, abs=1.5)


def test_plan_without_a_spread_or_store_names_the_missing_option(config, capsys, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert run_cli(["plan", "--config", str(config), "--metric", "t/acc", "--margin", "0.05"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("modelgate: error: no tracking store at sqlite:")
    assert "pass --discordance P (a 0/1 metric) or --sd S (a score)" in err
    assert not (config.parent / "mlflow").exists()  # looking did not create a store


def test_plan_with_an_unreachable_store_names_the_missing_option(config, capsys):
    assert run_cli(["plan", "--config", str(config), "--metric", "t/acc", "--margin", "0.05",
                    "--tracking-uri", "http://127.0.0.1:9"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "unreachable" in err and "--discordance P" in err


@pytest.mark.parametrize("args, words", [
    (["--margin", "-0.1", "--sd", "0.2"], "--margin: must be a positive number"),
    (["--margin", "0.1", "--sd", "0"], "--sd: must be a positive number"),
    (["--margin", "0.1", "--discordance", "1.5"], "--discordance: must be in (0, 1]"),
    (["--margin", "2", "--discordance", "0.5"], "--margin: a drop in a pass rate is at most 1"),
    (["--margin", "0.1", "--sd", "0.2", "--power", "1"], "--power: must be in [0.5, 1)"),
    (["--margin", "0.1", "--sd", "0.2", "--discordance", "0.1"], "not allowed with argument"),
    (["--margin", "abc", "--sd", "0.2"], "argument --margin: invalid float value"),
    (["--sd", "0.2"], "the following arguments are required: --margin"),
])
def test_bad_plan_arguments_exit_2_with_one_line(config, capsys, args, words):
    assert run_cli(["plan", "--config", str(config), "--metric", "t/acc", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert words in err and len(err.splitlines()) == 1


class FakeStore:
    def __init__(self, uri, verify=None):
        self.uri = uri

    def production(self, model_name):
        return Baseline("4", "run9", Pin("git", "hub", "f" * 40, {}), {},
                        {"t/acc": {f"i{i}": float(i % 4 != 0) for i in range(120)},
                         "t/f1": {f"i{i}": (i % 5) / 4 for i in range(120)}})


@pytest.fixture
def production(config, monkeypatch):
    (config.parent / "mlflow").mkdir()
    (config.parent / "mlflow" / "mlflow.db").write_bytes(b"")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setattr("pipeline.integrations.registry.BaselineStore", FakeStore)
    observed = {}
    monkeypatch.setattr(planning, "_observed_by_production_gate", lambda uri, run_id, metric: observed.get(metric))
    return observed


def test_plan_takes_the_spread_from_production_items_conservatively(config, capsys, production):
    assert run_cli(["plan", "--config", str(config), "--metric", "t/acc", "--margin", "0.05"]) == 0
    out = capsys.readouterr().out
    assert "metric: t/acc (binary)" in out and "discordant-pair rate 0.375 (observed)" in out  # 2 * 0.75 * 0.25
    assert "production v4's 120 recorded items, as if the candidate were independent of it (conservative)" in out
    needed = pw.items_needed(pw.Spread("binary", 0.375, True), 0.05)
    assert f"margin 0.05 needs {needed} paired items" in out
    at = pw.binary_mde(120, 0.375)
    assert f"at the 120 items production was gated on, the smallest drop detected with 80% power is {at:.3g} " \
           "(this margin is underpowered there)" in out


def test_plan_prefers_what_production_s_own_gate_observed(config, capsys, production):
    production["t/f1"] = pw.Spread("continuous", 0.1, True)
    assert run_cli(["plan", "--config", str(config), "--metric", "t/f1", "--margin", "0.05"]) == 0
    out = capsys.readouterr().out
    assert "metric: t/f1 (continuous)" in out and "sd of per-item differences 0.1 (observed)" in out
    assert "from production v4's gate (observed against its own baseline)" in out
    assert f"needs {pw.items_needed(pw.Spread('continuous', 0.1, True), 0.05)} paired items" in out


def test_plan_for_a_metric_production_did_not_record_is_bad_input(config, capsys, production):
    assert run_cli(["plan", "--config", str(config), "--metric", "t/rouge", "--margin", "0.05"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("modelgate: error: --metric: production v4 recorded no per-item values of t/rouge "
                          "(recorded: t/acc, t/f1)")
