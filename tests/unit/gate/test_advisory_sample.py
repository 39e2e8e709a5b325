"""The advisory (pull request) gate's smaller profile: a seeded sample of the prompt cases, the first N items of
each eval task, stated in the PR comment. The release gate always runs everything."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from pipeline.config.release import AdvisorySample, load_release
from pipeline.config.suite import load_suites
from pipeline.gate.run import advisory_profile
from pipeline.gate.stages.format import sample_suites
from pipeline.report import markdown
from pipeline.report.document import GateReport
from tests.support import releases
from tests.support.paths import REPO
from tests.support.reports import sample_document


def keys(suites):
    return [(s.name, c.id) for s in suites for c in s.cases]


def test_the_case_sample_is_seeded_by_the_revision_and_keeps_the_order():
    suites = load_suites(REPO / "prompts")
    everything = keys(suites)
    assert len(everything) > 20
    first = keys(sample_suites(suites, 20, "a" * 40))
    assert len(first) == 20 and set(first) < set(everything)
    assert first == sorted(first, key=everything.index)  # suites and cases in their files' order
    assert first == keys(sample_suites(suites, 20, "a" * 40))  # the same revision: the same cases
    assert first != keys(sample_suites(suites, 20, "b" * 40))
    assert sample_suites(suites, None, "a" * 40) == suites
    assert sample_suites(suites, len(everything), "a" * 40) == suites
    assert all(s.cases for s in sample_suites(suites, 1, "a" * 40))  # no empty suite left behind


def test_the_eval_items_cap_lm_evals_limit(tmp_path):
    release = load_release(releases.write_release(
        tmp_path, gates={"evals": {"tasks": ["t"], "limit": 50}, "advisory": {"sample": {"eval_items": 40}}}))
    assert release.advisory_sample == AdvisorySample(prompt_cases=None, eval_items=40)
    assert "advisory" not in release.gates
    assert advisory_profile(release, release.advisory_sample).evals_gate.limit == 40
    assert advisory_profile(release, AdvisorySample(eval_items=80)).evals_gate.limit == 50
    assert advisory_profile(release, None) is release


def test_the_pr_comment_states_the_sample():
    report = GateReport.from_dict(sample_document(Path("/nonexistent")))
    assert report.sample_line is None  # a release gate ran everything
    advisory = dataclasses.replace(report, gate_kind="advisory", absent=frozenset(),
                                   sample={"prompt_cases": 20, "prompt_cases_total": 44, "eval_items": 40})
    line = "advisory gate (not promotable): 20 of 44 prompt cases (a sample seeded by the revision), the first " \
           "40 items per eval task"
    assert advisory.sample_line == line
    assert markdown.inline(line) in markdown.render(advisory)
    again = GateReport.from_dict(advisory.to_dict())
    assert again.gate_kind == "advisory" and again.sample == advisory.sample
