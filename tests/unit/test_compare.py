"""The compare stage with an in-memory baseline store: first release, paired baseline, stale baseline."""

import pytest

from pipeline.config.release import Pin, load_release
from pipeline.gate.context import GateContext
from pipeline.gate.result import Status
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
                                          "reevaluated": False, "changed": []}
    assert all("format/pass" in r for r in result.reasons)  # only the failing metric is given as a reason
    table = open(result.artifacts["comparison.csv"]).read().splitlines()
    assert table[0].startswith("name,baseline_mean,candidate_mean,delta,lower,upper,margin,floor,n,verdict")
    assert table[1].startswith("format/pass,0.8,0.4,") and ",fail," in table[1]


def test_changed_evalset_triggers_reevaluation(ctx, monkeypatch):
    ctx.items = {"format/pass": items([1] * 50), "t/acc": items([1] * 50)}
    ctx.baseline_store = Store(baseline({"format/pass": items([0] * 50), "t/acc": items([0] * 50)},
                                        {"suites": "s1", "evalsets": "OLD"}))
    calls = []

    def fake_reevaluate(c, pin, say):
        calls.append(pin.revision)
        return {"format/pass": items([1] * 50), "t/acc": items([1] * 50)}

    monkeypatch.setattr(compare, "reevaluate", fake_reevaluate)
    result = compare.run(ctx)
    assert calls == ["f" * 40]
    assert result.details["baseline"]["reevaluated"] is True and result.details["baseline"]["changed"] == ["evalsets"]
    assert result.status == Status.PASSED


def test_small_identical_samples_are_inconclusive(ctx):
    same = items([1] * 10 + [0] * 10)
    ctx.items = {"format/pass": same}
    ctx.baseline_store = Store(baseline({"format/pass": dict(same)}))
    result = compare.run(ctx)
    assert result.status == Status.INCONCLUSIVE
    assert "inconclusive" in result.reasons[0]
