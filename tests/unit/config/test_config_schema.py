"""release.yaml is described once, by its typed model (pipeline/config/document.py and the sections it names): the
checked-in JSON Schema and the configuration reference are generated from it, and the `Release` built from a
release.yaml takes every default from it."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from pipeline.config import schema as generated
from pipeline.config.document import ModelSection, PromotionPolicy
from pipeline.config.gates import REPLAY_CHECKS, AdvisorySample, EvalsGate, FormatGate, ReplayGate
from pipeline.config.load_gate import LoadGate
from pipeline.config.release import load_release
from pipeline.config.request_profile import SAMPLING_PARAMS, RequestProfile
from pipeline.config.serving import Serving
from pipeline.errors import ConfigError
from tests.support.releases import VALID_RELEASE
from tests.support.signing import KEY, SigningKey

STALE = "stale: run `python -m pipeline.config.schema` and commit what it writes"


def test_the_checked_in_json_schema_is_generated_from_the_typed_model():
    assert generated.SCHEMA_FILE.read_text(encoding="utf-8") == generated.schema_text(), STALE


def test_the_configuration_reference_is_generated_from_the_typed_model():
    assert generated.REFERENCE_FILE.read_text(encoding="utf-8") == generated.reference_text(), STALE


def test_the_schema_command_writes_both_files_and_check_fails_while_one_is_stale(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(generated, "SCHEMA_FILE", tmp_path / "release.schema.json")
    monkeypatch.setattr(generated, "REFERENCE_FILE", tmp_path / "docs" / "configuration.md")
    assert generated.main(["--check"]) == 1
    assert "release.schema.json is stale" in capsys.readouterr().err
    assert generated.main([]) == 0
    assert generated.main(["--check"]) == 0
    (tmp_path / "docs" / "configuration.md").write_text("edited by hand\n")
    assert generated.main(["--check"]) == 1


def objects(node: Any, where: str = "#"):
    """Every object schema in `node` that lists properties, with where it is."""
    if isinstance(node, dict):
        if "properties" in node and node.get("type") == "object":
            yield where, node
        for key, value in node.items():
            if key not in ("default", "const", "enum"):
                yield from objects(value, f"{where}/{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from objects(value, f"{where}/{i}")


def test_every_section_refuses_unknown_keys_and_every_key_is_described():
    schema = generated.release_json_schema()
    found = list(objects(schema))
    assert len(found) >= 25
    for where, node in found:
        names = node.get("propertyNames", {}).get("enum")
        assert node.get("additionalProperties") is False or names == list(node["properties"]), where
        for key, prop in node["properties"].items():
            described = prop.get("description") or schema["$defs"].get(prop.get("$ref", "/").rsplit("/")[-1], {})
            assert described, f"{where}/{key} has no help text"


def test_the_choices_the_code_reads_are_the_schemas():
    defs = generated.release_json_schema()["$defs"]
    assert list(defs["SamplingParams"]["properties"]) == list(SAMPLING_PARAMS)
    assert defs["RequestProfile"]["properties"]["server_default"]["items"]["enum"] == list(SAMPLING_PARAMS)
    assert list(defs["ReplayChecks"]["properties"]) == list(REPLAY_CHECKS)
    assert defs["Serving"]["properties"]["mode"]["enum"] == ["spawn", "external"]
    assert defs["LoadGate"]["properties"]["levels"]["default"] == list(LoadGate().levels) == [1, 3, 5]
    assert defs["ModelSection"]["properties"]["served_name_prefix"]["default"] == "chat"


def every_section_empty() -> dict[str, Any]:
    data = copy.deepcopy(VALID_RELEASE)
    data["serving"] = {}
    data["gates"] = {"format": {}, "evals": {"tasks": ["t"]}, "load": {}, "advisory": {"sample": {}},
                     "replay": {"path": "traffic.jsonl"}}
    data["promotion"] = {}
    return data


def test_an_empty_section_builds_with_the_defaults_its_type_declares(write_release):
    release = load_release(write_release(every_section_empty()))
    assert release.serving == Serving()
    assert release.format_gate == FormatGate()
    assert release.evals_gate == EvalsGate(tasks=("t",))
    assert release.load_gate == LoadGate()
    assert release.replay_gate == ReplayGate(path="traffic.jsonl")
    assert release.advisory_sample == AdvisorySample()
    assert release.promotion == PromotionPolicy()
    assert release.served_name_prefix == ModelSection(name="x").served_name_prefix
    assert release.alpha == 0.05 and release.tracking_experiment == "modelgate/support-bot"


def test_a_missing_gate_section_means_the_gate_does_not_run(write_release):
    release = load_release(write_release(VALID_RELEASE))
    assert not release.format_gate.enabled and not release.evals_gate.enabled
    assert not release.load_gate.enabled and not release.replay_gate.enabled


def test_numbers_keep_the_spelling_yaml_gave_them(write_release):
    data = every_section_empty()
    data["gates"]["load"] = {"levels": [1, 2.5], "rates": [2], "slo": {"p95_e2el_ms": 5000}, "regression_pct": 30}
    data["gates"]["format"] = {"pass_rate": {"margin": 0, "floor": 0.5}}
    data["serving"] = {"request_profile": {"set": {"temperature": 1, "top_p": 1}}}
    release = load_release(write_release(data))
    load = release.load_gate
    assert [type(x) for x in load.levels] == [int, float] and load.levels == (1, 2.5)
    assert type(load.slo.p95_e2el_ms) is int and type(load.regression_pct) is int
    assert load.rates == (2.0,) and type(load.rates[0]) is float  # request rates were always floats
    assert type(release.format_gate.pass_rate.margin) is int
    profile = release.serving.request_profile
    assert profile.set == {"temperature": 1, "top_p": 1}
    assert json.dumps(profile.to_dict()) == '{"set": {"temperature": 1, "top_p": 1}, "server_default": []}'
    assert profile.digest() == RequestProfile(set={"temperature": 1, "top_p": 1}).digest()


def test_audit_keys_are_parsed_like_the_signing_keys(write_release):
    data = copy.deepcopy(VALID_RELEASE)
    auditor = SigningKey.new()
    data["signing"] = {"public_keys": [KEY.entry()], "audit_keys": [auditor.entry()]}
    release = load_release(write_release(data))
    assert [k.id for k in release.signing_keys] == [KEY.id]
    assert [k.id for k in release.audit_keys] == [auditor.id]
    data["signing"]["audit_keys"] = [{**auditor.entry(), "public_key": "bm90IGEga2V5"}]
    with pytest.raises(ConfigError) as info:
        load_release(write_release(data))
    assert info.value.path == "signing.audit_keys[0].public_key"
    data["signing"]["audit_keys"] = [{**auditor.entry(), "colour": "blue"}]
    with pytest.raises(ConfigError, match="unknown key 'colour'") as info:
        load_release(write_release(data))
    assert info.value.path == "signing.audit_keys[0]"


def test_data_the_schema_did_not_check_is_still_refused_in_one_line_naming_the_path(tmp_path):
    from pipeline.config.release import build_release

    data = copy.deepcopy(VALID_RELEASE)
    data["gates"] = {"load": {"knee": {"growth": 0.5}}}
    with pytest.raises(ConfigError) as info:
        build_release(data, tmp_path / "release.yaml")  # without validate(): the typed model refuses it too
    assert info.value.path == "gates.load.knee.growth" and "greater than 1" in info.value.one_line()
    assert "\n" not in info.value.one_line()
