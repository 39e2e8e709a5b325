"""The compare stage with an in-memory baseline store: first release, paired baseline, stale baseline."""

import csv

import numpy as np
import pytest

from pipeline.checks import power as pw
from pipeline.config.release import Pin, load_release
from pipeline.core.result import Status
from pipeline.errors import BadInput
from pipeline.gate.context import GateContext
from pipeline.gate.stages import compare
from pipeline.integrations.registry import Baseline
from tests.support.releases import VALID_RELEASE


class Store:
    def __init__(self, baseline):
        self.baseline = baseline
        self.asked = []

    def production(self, model_name):
        self.asked.append(model_name)
        return self.baseline


def items(values, prefix="c"):
    return {f"{prefix}{i}": float(v) for i, v in enumerate(values)}


@pytest.fixture
def ctx(write_release, tmp_path):
    data = dict(VALID_RELEASE, gates={"format": {"pass_rate": {"floor": 0.5, "margin": 0.1}},
                                      "evals": {"tasks": ["t"], "metrics": {"t/acc": {"floor": 0.2, "margin": 0.1}}}})
    release = load_release(write_release(data))
    c = GateContext(release=release, run_dir=tmp_path / "run", home=tmp_path)
    c.digests = {"suites": "s1", "evalsets": "e1"}
    return c


def baseline(items_by_metric, digests=None):
    pin = Pin("git", "hub", "f" * 40, {"a": "0" * 64})
    return Baseline("3", "run123", pin, digests or {"suites": "s1", "evalsets": "e1"}, items_by_metric)


def test_first_release_uses_absolute_floors(ctx):
    ctx.items = {"format/pass": items([1] * 30 + [0] * 10), "t/acc": items([1] * 10 + [0] * 90)}
    ctx.baseline_store = Store(None)
    result = compare.run(ctx)
    assert result.status == Status.FAILED  # t/acc 0.1 < floor 0.2
    assert result.details["baseline"] is None
    assert result.reasons[0] == "no production baseline: absolute floor only"
    assert any("t/acc: candidate 0.1 is below the absolute floor 0.2" in r for r in result.reasons)
    assert result.metrics["format.pass.candidate_mean"] == 0.75


def test_paired_with_recorded_baseline_rejects_a_worse_candidate(ctx):
    base = {"format/pass": items([1] * 80 + [0] * 20), "t/acc": items([1] * 60 + [0] * 40)}
    ctx.items = {"format/pass": items([1] * 40 + [0] * 60), "t/acc": items([1] * 60 + [0] * 40)}
    ctx.baseline_store = Store(baseline(base))
    result = compare.run(ctx)
    rows = {r["name"]: r for r in result.details["metrics"]}
    assert result.status == Status.FAILED
    assert rows["format/pass"]["verdict"] == "fail" and rows["format/pass"]["n"] == 100
    assert rows["format/pass"]["delta"] == pytest.approx(-0.4)
    assert rows["t/acc"]["verdict"] == "pass"  # identical on 100 items: within the 0.1 margin
    assert result.details["baseline"] == {"version": "3", "run_id": "run123", "revision": "f" * 40,
                                          "reevaluated": False, "changed": [], "reevaluated_metrics": [],
                                          "verified": None}
    assert all("format/pass" in r for r in result.reasons)  # only the failing metric is given as a reason
    table = open(result.artifacts["comparison.csv"]).read().splitlines()
    assert table[0].startswith("name,baseline_mean,candidate_mean,delta,lower,upper,margin,floor,n,verdict")
    assert table[1].startswith("format/pass,0.8,0.4,") and ",fail," in table[1]


def test_changed_evalset_triggers_reevaluation(ctx, monkeypatch):
    ctx.items = {"format/pass": items([1] * 50), "t/acc": items([1] * 50)}
    ctx.baseline_store = Store(baseline({"format/pass": items([0] * 50), "t/acc": items([0] * 50)},
                                        {"suites": "s1", "evalsets": "OLD"}))
    calls = []

    def fake_reevaluate(c, pin, say, metrics):
        calls.append((pin.revision, metrics))
        return {"t/acc": items([1] * 50)}

    monkeypatch.setattr(compare, "reevaluate", fake_reevaluate)
    result = compare.run(ctx)
    assert calls == [("f" * 40, {"t/acc"})]  # the suites did not change: their recorded items still pair
    base = result.details["baseline"]
    assert base["reevaluated"] is True and base["changed"] == ["evalsets"] and base["reevaluated_metrics"] == ["t/acc"]
    rows = {r["name"]: r for r in result.details["metrics"]}
    assert rows["format/pass"]["baseline_mean"] == 0 and rows["t/acc"]["baseline_mean"] == 1
    assert result.status == Status.PASSED


def test_small_identical_samples_are_inconclusive(ctx):
    same = items([1] * 10 + [0] * 10)
    ctx.items = {"format/pass": same}
    ctx.baseline_store = Store(baseline({"format/pass": dict(same)}))
    result = compare.run(ctx)
    assert result.status == Status.INCONCLUSIVE
    assert "inconclusive" in result.reasons[0]


def evals_ctx(write_release, tmp_path, metrics):
    data = dict(VALID_RELEASE, gates={"evals": {"tasks": ["t"], "metrics": metrics}})
    c = GateContext(release=load_release(write_release(data)), run_dir=tmp_path / "run", home=tmp_path)
    c.digests = {"evalsets": "e1"}
    return c


def test_a_score_metric_goes_through_the_paired_bootstrap(write_release, tmp_path):
    ctx = evals_ctx(write_release, tmp_path, {"t/f1": {"floor": 0.2, "margin": 0.1}, "t/acc": {"margin": 0.1}})
    rng = np.random.default_rng(0)
    base = rng.uniform(0.3, 1.0, 200)
    ctx.items = {"t/f1": items(np.clip(base - 0.01 + rng.normal(0, 0.05, 200), 0, 1)),
                 "t/acc": items([1] * 150 + [0] * 50)}
    ctx.baseline_store = Store(baseline({"t/f1": items(base), "t/acc": items([1] * 150 + [0] * 50)},
                                        {"evalsets": "e1"}))
    result = compare.run(ctx)
    rows = {r["name"]: r for r in result.details["metrics"]}
    f1, acc = rows["t/f1"], rows["t/acc"]
    assert f1["kind"] == "continuous" and f1["method"].startswith("paired percentile bootstrap")
    assert acc["kind"] == "binary" and acc["method"].startswith("exact conditional McNemar")
    assert f1["verdict"] == "pass" and f1["p_value"] is None
    assert f1["sd_diff"] == pytest.approx(np.std(np.subtract(list(ctx.items["t/f1"].values()), base), ddof=1))
    assert f1["mde"] == pytest.approx(pw.continuous_mde(200, f1["sd_diff"]))
    assert f1["underpowered"] is False and f1["discordance"] is None
    assert result.metrics["t.f1.mde"] == f1["mde"] and result.metrics["t.acc.mde"] == acc["mde"]
    table = list(csv.DictReader(open(result.artifacts["comparison.csv"])))
    assert {r["name"]: r["kind"] for r in table} == {"t/f1": "continuous", "t/acc": "binary"}
    assert float(table[0]["mde"]) == pytest.approx(f1["mde"])


def test_a_margin_below_the_detectable_drop_is_flagged_underpowered(write_release, tmp_path):
    ctx = evals_ctx(write_release, tmp_path, {"t/acc": {"margin": 0.02}})
    ctx.items = {"t/acc": items([1] * 20 + [0] * 10)}
    ctx.baseline_store = Store(baseline({"t/acc": items([1] * 18 + [0] * 2 + [1] * 2 + [0] * 8)}, {"evalsets": "e1"}))
    result = compare.run(ctx)
    row = result.details["metrics"][0]
    assert row["discordance"] == pytest.approx(4 / 30)
    assert row["mde"] == pytest.approx(pw.binary_mde(30, 4 / 30)) and row["mde"] > 0.02
    assert row["underpowered"] is True and row["items_needed"] > 30
    note = next(r for r in result.reasons if "underpowered" in r)
    assert note.startswith("t/acc: underpowered: margin 0.02 is below the smallest drop this gate detects with 80% "
                           f"power ({row['mde']:.3g} at n=30, alpha 0.05): it could have missed drops up to")
    assert f"about {row['items_needed']} paired items" in note


def test_first_release_takes_the_kind_from_the_values(write_release, tmp_path):
    ctx = evals_ctx(write_release, tmp_path, {"t/score": {"floor": 0.2}})
    ctx.items = {"t/score": items([0.5, 0.25, 1.0])}
    ctx.baseline_store = Store(None)
    row = compare.run(ctx).details["metrics"][0]
    assert row["kind"] == "continuous" and row["mde"] is None and row["underpowered"] is None


@pytest.mark.parametrize("side", ["candidate", "baseline"])
def test_a_nan_item_value_is_bad_input_naming_metric_item_and_side(write_release, tmp_path, side):
    ctx = evals_ctx(write_release, tmp_path, {"t/f1": {"margin": 0.1}})
    good, bad = items([0.5, 0.25, 1.0]), items([0.5, float("nan"), 1.0])
    ctx.items = {"t/f1": bad if side == "candidate" else good}
    ctx.baseline_store = Store(baseline({"t/f1": good if side == "candidate" else bad}, {"evalsets": "e1"}))
    with pytest.raises(BadInput) as err:
        compare.run(ctx)
    who = "the candidate" if side == "candidate" else "the production baseline v3"
    assert str(err.value).startswith(f"t/f1: per-item value nan of {who} for item c1: a metric must score every")


def test_no_quality_metrics_is_skipped_and_asks_no_baseline(ctx):
    ctx.items = {}
    ctx.baseline_store = Store(None)
    result = compare.run(ctx)
    assert result.status == Status.SKIPPED and result.reasons == ["no quality metrics to compare"]
    assert ctx.baseline_store.asked == []


def test_items_the_baseline_lacks_are_counted_as_unpaired_not_compared(ctx):
    ctx.items = {"t/acc": items([1] * 60)}
    ctx.baseline_store = Store(baseline({"t/acc": {k: v for k, v in items([1] * 60).items() if k != "c0"}}))
    result = compare.run(ctx)
    (row,) = result.details["metrics"]
    assert result.details["unpaired"] == {"t/acc": 1} and row["n"] == 59


class FakeServer:
    """Stands in for VllmServer: records how it was started and whether it was stopped."""

    started: list = []

    def __init__(self, model_dir, served_name, serving, log_file, **kwargs):
        self.args = (model_dir, served_name, serving, log_file)
        self.stopped = False
        FakeServer.started.append(self)

    def __enter__(self):
        return f"endpoint of {self.args[1]}"

    def __exit__(self, *exc):
        self.stopped = True

    def check_alive(self):
        return None


def test_reevaluate_serves_the_baseline_pin_and_runs_the_candidates_suites_and_evalsets(ctx, monkeypatch, tmp_path):
    from types import SimpleNamespace

    ctx.items = {"format/pass": items([1] * 4), "t/acc": items([1] * 4)}
    fetched, format_calls, eval_calls = [], [], []
    monkeypatch.setattr(FakeServer, "started", [])
    monkeypatch.setattr(compare, "VllmServer", FakeServer)
    monkeypatch.setattr(compare, "fetch", lambda pin, location, home, **kw: fetched.append((pin, kw["file"]))
                        or SimpleNamespace(path=tmp_path / "baseline-model"))
    monkeypatch.setattr(compare.formatcheck, "suites_for", lambda c: ["the candidate's suites"])

    def fake_format(endpoint, suites, **kw):
        format_calls.append((endpoint, suites, kw["profile"]))
        return SimpleNamespace(items=items([0] * 4))

    def fake_evals(endpoint, model_dir, gate, root, out_dir, progress, check_alive):
        eval_calls.append((endpoint, model_dir, check_alive.__self__))
        return "lm-eval run"

    monkeypatch.setattr(compare.formatcheck, "evaluate", fake_format)
    monkeypatch.setattr(compare.evals, "evaluate", fake_evals)
    monkeypatch.setattr(compare.evals, "item_values",
                        lambda run, names, **kw: {n: items([0] * 4) for n in names} if run == "lm-eval run" else {})
    pin = Pin("git", "hub/model", "e" * 40, {"config.json": "a" * 64})
    result = compare.reevaluate(ctx, pin, progress=lambda m: None)
    assert result == {"format/pass": items([0] * 4), "t/acc": items([0] * 4)}
    assert fetched[0][0] == pin and "(production baseline)" in fetched[0][1]
    (server,) = FakeServer.started
    assert server.args[1] == f"chat@{'e' * 12}" and server.args[0] == tmp_path / "baseline-model"
    assert server.stopped
    served = f"endpoint of chat@{'e' * 12}"
    assert format_calls == [(served, ["the candidate's suites"], ctx.release.serving.request_profile)]
    assert eval_calls == [(served, tmp_path / "baseline-model", server)]  # lm-eval stops if this server dies


def test_reevaluate_stops_the_baseline_server_when_its_evals_fail(ctx, monkeypatch, tmp_path):
    from types import SimpleNamespace

    from pipeline.errors import InfraError

    ctx.items = {"t/acc": items([1] * 4)}  # no format metric: the format suites are not run for the baseline
    monkeypatch.setattr(FakeServer, "started", [])
    monkeypatch.setattr(compare, "VllmServer", FakeServer)
    monkeypatch.setattr(compare, "fetch", lambda *a, **kw: SimpleNamespace(path=tmp_path / "m"))
    monkeypatch.setattr(compare.formatcheck, "evaluate", lambda *a, **kw: pytest.fail("format ran"))

    def broken(*args, **kwargs):
        raise InfraError("lm-eval failed")

    monkeypatch.setattr(compare.evals, "evaluate", broken)
    with pytest.raises(InfraError, match="lm-eval failed"):
        compare.reevaluate(ctx, Pin("git", "hub/model", "e" * 40, {}), progress=lambda m: None)
    assert [s.stopped for s in FakeServer.started] == [True]


def test_only_the_metrics_a_changed_digest_covers_are_measured_again():
    names = {"format/pass", "t/acc", "t/f1"}
    assert compare.stale_metrics(names, ["evalsets"], names) == {"t/acc", "t/f1"}
    assert compare.stale_metrics(names, ["suites"], names) == {"format/pass"}
    assert compare.stale_metrics(names, ["request_profile", "evalsets"], names) == names
    # a metric the baseline never recorded, whatever changed
    assert compare.stale_metrics(names, ["t/f1 (not recorded for the baseline)"], names - {"t/f1"}) == {"t/f1"}
    # a digest this code does not know: nothing recorded is trusted
    assert compare.stale_metrics(names, ["tokenizer"], names) == names


def test_reevaluate_runs_only_what_it_is_asked_for(ctx, monkeypatch, tmp_path):
    from types import SimpleNamespace

    ctx.items = {"format/pass": items([1] * 4), "t/acc": items([1] * 4)}
    monkeypatch.setattr(FakeServer, "started", [])
    monkeypatch.setattr(compare, "VllmServer", FakeServer)
    monkeypatch.setattr(compare, "fetch", lambda *a, **kw: SimpleNamespace(path=tmp_path / "m"))
    monkeypatch.setattr(compare.formatcheck, "evaluate", lambda *a, **kw: pytest.fail("format ran"))
    monkeypatch.setattr(compare.evals, "evaluate", lambda *a, **kw: "lm-eval run")
    monkeypatch.setattr(compare.evals, "item_values", lambda run, names, **kw: {n: items([0] * 4) for n in names})
    got = compare.reevaluate(ctx, Pin("git", "hub/model", "e" * 40, {}), lambda m: None, {"t/acc"})
    assert got == {"t/acc": items([0] * 4)}
