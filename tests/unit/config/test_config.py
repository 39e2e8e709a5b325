import copy

import pytest

from pipeline.config.release import load_release
from pipeline.errors import EXIT_BAD_INPUT, ConfigError
from tests.support.releases import VALID_RELEASE


def variant(**changes):
    data = copy.deepcopy(VALID_RELEASE)
    for dotted, value in changes.items():
        node = data
        *parents, last = dotted.split("__")
        for key in parents:
            node = node.setdefault(key, {})
        if value is KeyError:
            node.pop(last)
        else:
            node[last] = value
    return data


def test_valid_release_builds_typed_frozen_config(write_release):
    path = write_release(VALID_RELEASE)
    release = load_release(path)
    assert release.model_name == "support-bot"
    assert release.candidate.revision == VALID_RELEASE["candidate"]["revision"]
    assert release.candidate.files["model.safetensors"] == "b" * 64
    assert release.serving.max_model_len == 1024 and release.serving.enforce_eager is True
    assert release.serving.host == "127.0.0.1"
    assert release.served_name(release.candidate) == "chat@0123456789ab"
    assert release.repo_location(release.candidate) == str((path.parent / "hub/model").resolve())
    assert release.tracking_experiment == "modelgate/support-bot"
    with pytest.raises(AttributeError):
        release.model_name = "other"


@pytest.mark.parametrize("data, path, words", [
    (variant(candidate__revision="main"), "candidate.revision", "branch name moves"),
    (variant(candidate__revision="latest"), "candidate.revision", "pins must be a full 40-hex commit"),
    (variant(candidate__revision="0123456"), "candidate.revision", "short sha"),
    (variant(candidate__revision="v1.0"), "candidate.revision", "tag"),
    (variant(candidate__revision=KeyError), "candidate", "'revision' is required"),
    (variant(candidate__colour="blue"), "candidate", "unknown key 'colour'"),
    (variant(surprise=1), "(top level)", "unknown key 'surprise'"),
    (variant(serving__max_model_len="big"), "serving.max_model_len", "is not of type 'integer'"),
    (variant(serving__max_model_len=4), "serving.max_model_len", "less than the minimum"),
    (variant(serving__extra_args=["--x", 3]), "serving.extra_args[1]", "is not of type 'string'"),
    (variant(candidate__source="s3"), "candidate.source", "is not one of"),
    (variant(candidate__files={"config.json": "xyz"}), "candidate.files.config.json", "is not a sha256"),
    (variant(schema_version=2), "schema_version", "unsupported schema_version"),
    (variant(serving__mode="external"), "serving.external_url", "needs serving.external_url"),
    (variant(gates__load__slos=5), "gates.load", "unknown key 'slos'"),
    (variant(serving__request_profile={"set": {"temprature": 0}}), "serving.request_profile.set",
     "'temprature' is not one of"),
    (variant(serving__request_profile={"server_default": ["top_p", "temperature"], "set": {"temperature": 0}}),
     "serving.request_profile.set.temperature", "cannot be both set by the clients and left to the server"),
    (variant(serving__request_profile={"set": {"temperature": -1}}), "serving.request_profile.set.temperature",
     "less than the minimum"),
])
def test_invalid_release_names_file_path_and_problem(write_release, data, path, words):
    file = write_release(data)
    with pytest.raises(ConfigError) as info:
        load_release(file)
    err = info.value
    assert err.exit_code == EXIT_BAD_INPUT
    assert err.file == str(file) and err.path == path
    line = err.one_line()
    assert "\n" not in line and str(file) in line and path in line and words in line, line


def test_yaml_syntax_error_names_line(write_release):
    file = write_release("schema_version: 1\nmodel: {name: x\n")
    with pytest.raises(ConfigError, match=r"line \d+, column \d+: invalid YAML"):
        load_release(file)


def test_missing_file_and_non_mapping(write_release, tmp_path):
    with pytest.raises(ConfigError, match="file not found"):
        load_release(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_release(write_release("- a\n- b\n"))


def test_quality_gates_run_only_when_configured(write_release):
    bare = load_release(write_release(VALID_RELEASE))
    assert not bare.format_gate.enabled and not bare.evals_gate.enabled
    data = copy.deepcopy(VALID_RELEASE)
    data["gates"] = {"format": {}, "evals": {"tasks": ["t"], "metrics": {"t/acc": {"floor": 0.5}}}}
    gated = load_release(write_release(data))
    assert gated.format_gate.enabled and gated.format_gate.prompts_dir == "prompts"
    assert gated.format_gate.pass_rate.margin == 0.05
    assert gated.evals_gate.enabled and gated.evals_gate.metrics["t/acc"].floor == 0.5


def test_request_profile_is_typed_and_defaults_to_what_the_cases_set(write_release):
    release = load_release(write_release(VALID_RELEASE))
    assert not release.serving.request_profile.configured
    profile = {"set": {"temperature": 0.2, "stop": ["###"]}, "server_default": ["top_p", "max_tokens"]}
    release = load_release(write_release(variant(serving__request_profile=profile)))
    assert release.serving.request_profile.configured
    assert release.serving.request_profile.set == {"temperature": 0.2, "stop": ["###"]}
    assert release.serving.request_profile.server_default == ("top_p", "max_tokens")
