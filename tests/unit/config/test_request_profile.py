"""serving.request_profile: what production's clients set is set, what they leave to the server is left out."""

from __future__ import annotations

from pipeline.config.request_profile import RequestProfile


def test_no_profile_sends_what_the_case_sets():
    params = {"temperature": 0.0, "max_tokens": 64, "stop": ["\n"]}
    assert RequestProfile().apply(params) == params
    assert not RequestProfile().configured


def test_parameters_left_to_the_server_are_never_sent_even_when_a_case_sets_them():
    profile = RequestProfile(server_default=("temperature", "max_tokens"))
    assert profile.apply({"temperature": 0.0, "max_tokens": 64, "top_p": 0.9}) == {"top_p": 0.9}


def test_parameters_production_sets_are_added_where_a_case_does_not_set_its_own():
    profile = RequestProfile(set={"temperature": 0.3, "seed": 7})
    assert profile.apply({"max_tokens": 64}) == {"max_tokens": 64, "temperature": 0.3, "seed": 7}
    assert profile.apply({"temperature": 0.0})["temperature"] == 0.0  # a case is one kind of request


def test_the_digest_changes_with_the_profile_and_not_with_the_order_of_the_list():
    a = RequestProfile(server_default=("top_p", "top_k"))
    assert a.digest() == RequestProfile(server_default=("top_k", "top_p")).digest()
    assert a.digest() != RequestProfile(server_default=("top_p",)).digest()
    assert a.digest() != RequestProfile(set={"top_p": 0.5}).digest()
