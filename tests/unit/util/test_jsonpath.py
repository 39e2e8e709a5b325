"""The one location formatter keeps each message's spelling: dotted config paths, $-rooted JSONPath for
model output, slash-separated pointers inside a JSON Schema."""

from pipeline.util.jsonpath import format_path, json_path


def test_dotted_path_as_in_config_messages():
    assert format_path(["serving", "extra_args", 2]) == "serving.extra_args[2]"
    assert format_path([]) == ""
    assert format_path([], empty="(top level)") == "(top level)"
    assert format_path(["expect", "regex"], root="cases[id=foo]") == "cases[id=foo].expect.regex"


def test_jsonpath_quotes_keys_that_are_not_identifiers():
    assert json_path([]) == "$"
    assert json_path(["items", 0, "qty"]) == "$.items[0].qty"
    assert json_path(["odd key", "x"]) == '$["odd key"].x'


def test_pointer_path_inside_a_schema():
    assert format_path(["properties", "x", 0], style="pointer") == "properties/x/0"
    assert format_path([], style="pointer", empty="(root)") == "(root)"
